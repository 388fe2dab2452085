"""Plots drawn on the server as SVG text (NumPy only; no matplotlib at request time).

:func:`parity_svg` (observed against predicted, with the y = x line) and :func:`roc_svg`
(the ROC curve, its AUC in the legend) draw one ``circle.point`` per molecule carrying
``data-tooltip`` and ``data-depict``, so the UI's script shows the molecule on hover.
:func:`histogram_svg` draws a distribution. Every SVG is standalone (``xmlns``, colours
as attributes rather than page CSS) so it can be served as an image too. Points share
their style through one group, keeping a 1,000-point plot near 150 kB.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Frame",
    "histogram_svg",
    "nice_ticks",
    "parity_svg",
    "roc_curve",
    "roc_svg",
    "tick_label",
]

SVG_NS = "http://www.w3.org/2000/svg"
_ACCENT = "#1f6feb"
_SECOND = "#cf222e"
_MUTED = "#5f6b7a"
_GRID = "#e6e9ee"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high].

    Examples
    --------
    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(-7.9, 1.2, 4)
    [-10.0, -7.5, -5.0, -2.5, 0.0, 2.5]
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        low, high = low - 1.0, high + 1.0
    raw = (high - low) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    # Rounded, so that 3 * 0.2 is 0.6 and not 0.6000000000000001.
    return [round(i * step, 12) for i in range(first, last + 1)]


def tick_label(value: float) -> str:
    """A tick value as short text ('0.5', '-2', '1e+04').

    Examples
    --------
    >>> tick_label(0.6), tick_label(-2.0), tick_label(25000.0)
    ('0.6', '-2', '2.5e+04')
    """
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4g}"


@dataclass(frozen=True)
class Frame:
    """A plotting area: data ranges mapped onto pixels inside margins.

    ``x_range``/``y_range`` are the data limits; ``px``/``py`` map data to pixels (y
    grows upwards in data, downwards on screen).
    """

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    left: int = 56
    right: int = 14
    top: int = 30
    bottom: int = 46

    def px(self, x: NDArray[np.float64] | float) -> NDArray[np.float64] | float:
        """Pixel column of data ``x``."""
        lo, hi = self.x_range
        return self.left + (x - lo) / (hi - lo) * (self.width - self.left - self.right)

    def py(self, y: NDArray[np.float64] | float) -> NDArray[np.float64] | float:
        """Pixel row of data ``y``."""
        lo, hi = self.y_range
        return (
            self.height
            - self.bottom
            - (y - lo) / (hi - lo) * (self.height - self.top - self.bottom)
        )

    def open(self, css_class: str, title: str, label: str) -> str:
        """The root ``<svg>`` tag, title and background."""
        return (
            f'<svg xmlns="{SVG_NS}" class="{html.escape(css_class)}" '
            f'viewBox="0 0 {self.width} {self.height}" width="{self.width}" '
            f'height="{self.height}" role="img" aria-label="{html.escape(label)}" '
            # No <title>: browsers would show it over every point's own tooltip.
            f'font-family="sans-serif" font-size="11">'
            f'<rect width="{self.width}" height="{self.height}" fill="#fff"/>'
            f'<text class="plot-title" x="{self.width / 2:.1f}" y="18" text-anchor="middle" '
            f'font-size="13" font-weight="600">{html.escape(title)}</text>'
        )

    def axes(
        self,
        x_ticks: Sequence[float],
        y_ticks: Sequence[float],
        x_label: str,
        y_label: str,
    ) -> str:
        """Grid lines, both axes with ticks and tick labels, and the axis labels."""
        x0, x1 = self.left, self.width - self.right
        y0, y1 = self.height - self.bottom, self.top
        out = [f'<g class="axes" stroke="{_GRID}" stroke-width="1">']
        for t in x_ticks:
            x = float(self.px(t))
            out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}"/>')
        for t in y_ticks:
            y = float(self.py(t))
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}"/>')
        out.append(
            f'<path d="M{x0},{y1} V{y0} H{x1}" fill="none" stroke="{_MUTED}"/></g>'
            f'<g class="ticks" fill="{_MUTED}">'
        )
        for t in x_ticks:
            x = float(self.px(t))
            out.append(
                f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="{_MUTED}"/>'
                f'<text class="tick x" x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">'
                f"{tick_label(t)}</text>"
            )
        for t in y_ticks:
            y = float(self.py(t))
            out.append(
                f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0}" y2="{y:.1f}" stroke="{_MUTED}"/>'
                f'<text class="tick y" x="{x0 - 7}" y="{y + 4:.1f}" text-anchor="end">'
                f"{tick_label(t)}</text>"
            )
        middle_y = (y0 + y1) / 2
        out.append(
            f'</g><text class="axis-label x" x="{(x0 + x1) / 2:.1f}" y="{self.height - 8}" '
            f'text-anchor="middle">{html.escape(x_label)}</text>'
            f'<text class="axis-label y" x="14" y="{middle_y:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {middle_y:.1f})">{html.escape(y_label)}</text>'
        )
        return "".join(out)


def _number(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "—"


def _points(
    xs: NDArray[np.float64],
    ys: NDArray[np.float64],
    tooltips: Sequence[str],
    smiles: Sequence[str],
    fill: str,
    css_class: str = "points",
) -> str:
    """One ``circle.point`` per molecule, styled by their group; tooltip and depiction link
    escaped (SMILES are user data)."""
    out = [
        f'<g class="{css_class}" fill="{fill}" fill-opacity="0.6" stroke="#fff" stroke-width="0.5">'
    ]
    for x, y, tip, smi in zip(xs, ys, tooltips, smiles, strict=True):
        depict = "/depict?smiles=" + quote(smi, safe="")
        out.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5" '
            f'data-tooltip="{html.escape(tip)}" data-depict="{html.escape(depict)}"/>'
        )
    out.append("</g>")
    return "".join(out)


def _empty(frame: Frame, css_class: str, title: str, message: str) -> str:
    return (
        frame.open(css_class, title, title)
        + f'<text x="{frame.width / 2:.1f}" y="{frame.height / 2:.1f}" text-anchor="middle" '
        f'fill="{_MUTED}">{html.escape(message)}</text></svg>'
    )


def parity_svg(
    observed: ArrayLike,
    predicted: ArrayLike,
    smiles: Sequence[str],
    *,
    title: str = "parity",
    x_label: str = "observed",
    y_label: str = "predicted",
    size: int = 440,
) -> str:
    """Return a parity plot: each molecule at (observed, predicted), with the y = x line.

    Both axes share one range, so distance from the diagonal reads as error. Rows with a
    missing value are left out.

    Examples
    --------
    >>> svg = parity_svg([1.0, 2.0, 3.0], [1.1, 1.9, 3.2], ["CCO", "CCN", "c1ccccc1"])
    >>> svg.count('class="point"'), 'class="plot parity"' in svg
    (3, True)
    """
    obs = np.asarray(observed, dtype=np.float64)
    pred = np.asarray(predicted, dtype=np.float64)
    keep = np.isfinite(obs) & np.isfinite(pred)
    css = "plot parity"
    if not keep.any():
        return _empty(Frame(size, size, (0, 1), (0, 1)), css, title, "no predictions to plot")
    obs, pred = obs[keep], pred[keep]
    names = [s for s, k in zip(smiles, keep, strict=True) if k]
    ticks = nice_ticks(float(min(obs.min(), pred.min())), float(max(obs.max(), pred.max())))
    limits = (ticks[0], ticks[-1])
    frame = Frame(size, size, limits, limits)
    tips = [f"{s}: {_number(o)} / {_number(p)}" for s, o, p in zip(names, obs, pred, strict=True)]
    lo_x, lo_y, hi_x, hi_y = (
        float(frame.px(limits[0])),
        float(frame.py(limits[0])),
        float(frame.px(limits[1])),
        float(frame.py(limits[1])),
    )
    return (
        frame.open(css, title, f"{title}: {len(obs)} molecules")
        + frame.axes(ticks, ticks, x_label, y_label)
        + f'<line class="identity" x1="{lo_x:.1f}" y1="{lo_y:.1f}" x2="{hi_x:.1f}" '
        f'y2="{hi_y:.1f}" stroke="{_MUTED}" stroke-dasharray="4 3"/>'
        + _points(np.asarray(frame.px(obs)), np.asarray(frame.py(pred)), tips, names, _ACCENT)
        + "</svg>"
    )


def roc_curve(
    labels: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """Return the ROC curve's false and true positive rates (from (0, 0) to (1, 1)) and
    its area, ties in score taken together (as scikit-learn does).

    Examples
    --------
    >>> fpr, tpr, auc = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> fpr.tolist(), tpr.tolist(), auc
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0], 0.75)
    """
    y = np.asarray(labels, dtype=np.float64) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1] if len(s) else np.array([], int)
    tp = np.cumsum(y)[last_of_tie].astype(np.float64)
    fp = (last_of_tie + 1 - tp).astype(np.float64)
    positives, negatives = float(y.sum()), float(len(y) - y.sum())
    tpr = np.r_[0.0, tp / positives] if positives else np.zeros(len(tp) + 1)
    fpr = np.r_[0.0, fp / negatives] if negatives else np.zeros(len(fp) + 1)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, area


def roc_svg(
    labels: ArrayLike,
    scores: ArrayLike,
    smiles: Sequence[str],
    *,
    title: str = "ROC",
    size: int = 440,
) -> str:
    """Return a ROC curve with its AUC in the legend, and each molecule as a point on the
    curve where the threshold equals its score (positives and negatives in two colours).

    Examples
    --------
    >>> svg = roc_svg([0, 1, 1, 0], [0.2, 0.9, 0.6, 0.7], ["CCO", "CCN", "CCC", "CCCl"])
    >>> svg.count('class="point"'), "AUC 0.75" in svg
    (4, True)
    """
    y = np.asarray(labels, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(y) & np.isfinite(s)
    css = "plot roc"
    frame = Frame(size, size, (0.0, 1.0), (0.0, 1.0))
    if not keep.any() or len(np.unique(y[keep] > 0.5)) < 2:
        return _empty(frame, css, title, "the test set needs both classes for a ROC curve")
    y, s = y[keep], s[keep]
    names = [n for n, k in zip(smiles, keep, strict=True) if k]
    fpr, tpr, area = roc_curve(y, s)
    positive = y > 0.5
    # Each molecule sits where the threshold equals its score: everything scored at
    # least as high is called positive.
    ranked = np.sort(s)
    above = len(s) - np.searchsorted(ranked, s, side="left")
    pos_scores = np.sort(s[positive])
    tp_at = len(pos_scores) - np.searchsorted(pos_scores, s, side="left")
    fp_at = above - tp_at
    point_fpr = fp_at / max(int((~positive).sum()), 1)
    point_tpr = tp_at / max(int(positive.sum()), 1)
    ticks = nice_ticks(0.0, 1.0)
    curve = " ".join(
        f"{float(frame.px(a)):.1f},{float(frame.py(b)):.1f}" for a, b in zip(fpr, tpr, strict=True)
    )
    tips = [
        f"{n}: {'active' if p else 'inactive'} / {_number(v)}"
        for n, p, v in zip(names, positive, s, strict=True)
    ]
    px, py = np.asarray(frame.px(point_fpr)), np.asarray(frame.py(point_tpr))
    legend_x, legend_y = frame.width - frame.right - 150, frame.height - frame.bottom - 52
    return (
        frame.open(css, title, f"{title}: {len(s)} molecules, AUC {area:.3f}")
        + frame.axes(ticks, ticks, "false positive rate", "true positive rate")
        + f'<line class="chance" x1="{float(frame.px(0.0)):.1f}" y1="{float(frame.py(0.0)):.1f}" '
        f'x2="{float(frame.px(1.0)):.1f}" y2="{float(frame.py(1.0)):.1f}" stroke="{_MUTED}" '
        'stroke-dasharray="4 3"/>'
        + f'<polyline class="curve" points="{curve}" fill="none" stroke="{_ACCENT}" '
        'stroke-width="2"/>'
        + _points(
            px[positive],
            py[positive],
            _pick(tips, positive),
            _pick(names, positive),
            _ACCENT,
            "points positive",
        )
        + _points(
            px[~positive],
            py[~positive],
            _pick(tips, ~positive),
            _pick(names, ~positive),
            _SECOND,
            "points negative",
        )
        + f'<g class="legend"><rect x="{legend_x}" y="{legend_y}" width="142" height="46" '
        f'fill="#fff" stroke="{_GRID}"/>'
        f'<line x1="{legend_x + 8}" y1="{legend_y + 14}" x2="{legend_x + 26}" '
        f'y2="{legend_y + 14}" stroke="{_ACCENT}" stroke-width="2"/>'
        f'<text x="{legend_x + 32}" y="{legend_y + 18}">AUC {area:.3f}</text>'
        f'<circle cx="{legend_x + 13}" cy="{legend_y + 33}" r="3.5" fill="{_ACCENT}"/>'
        f'<circle cx="{legend_x + 22}" cy="{legend_y + 33}" r="3.5" fill="{_SECOND}"/>'
        f'<text x="{legend_x + 32}" y="{legend_y + 37}">active / inactive</text></g>' + "</svg>"
    )


def _pick(items: Sequence[str], mask: NDArray[np.bool_]) -> list[str]:
    return [item for item, keep in zip(items, mask, strict=True) if keep]


def histogram_svg(
    values: ArrayLike,
    *,
    bins: int = 20,
    title: str = "distribution",
    x_label: str = "value",
    y_label: str = "count",
    width: int = 440,
    height: int = 280,
    css_class: str = "plot histogram",
) -> str:
    """Return a histogram of ``values`` (non-finite ones left out), one ``rect.bar`` per
    bin with its range and count as a tooltip.

    Examples
    --------
    >>> svg = histogram_svg([1, 2, 2, 3, 3, 3], bins=3)
    >>> svg.count('class="bar"')
    3
    """
    data = np.asarray(values, dtype=np.float64)
    data = data[np.isfinite(data)]
    if not len(data):
        return _empty(Frame(width, height, (0, 1), (0, 1)), css_class, title, "no values")
    counts, edges = np.histogram(data, bins=bins)
    y_ticks = nice_ticks(0.0, float(counts.max()), 4)
    frame = Frame(width, height, (float(edges[0]), float(edges[-1])), (0.0, y_ticks[-1]))
    x_ticks = [
        t for t in nice_ticks(float(edges[0]), float(edges[-1])) if edges[0] <= t <= edges[-1]
    ]
    bars = [f'<g class="bars" fill="{_ACCENT}" fill-opacity="0.75">']
    for count, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        x0, x1 = float(frame.px(lo)), float(frame.px(hi))
        top, base = float(frame.py(float(count))), float(frame.py(0.0))
        tip = f"{_number(lo)} to {_number(hi)}: {int(count)}"
        bars.append(
            f'<rect class="bar" x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
            f'height="{base - top:.1f}" data-tooltip="{html.escape(tip)}"/>'
        )
    bars.append("</g>")
    return (
        frame.open(css_class, title, f"{title}: {len(data)} values")
        + frame.axes(x_ticks, y_ticks, x_label, y_label)
        + "".join(bars)
        + "</svg>"
    )
