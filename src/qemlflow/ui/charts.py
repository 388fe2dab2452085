"""Small SVG charts of the monitoring pages: a series over time and paired histograms.

Each function returns an ``<svg class="plot ...">`` string drawn from numbers only; the
labels it draws are escaped, so the result may be inlined with the ``svg`` filter.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

__all__ = ["histogram_pair", "time_series"]

_WIDTH, _HEIGHT = 520, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 12, 22, 34


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _frame(kind: str, title: str, body: list[str]) -> str:
    label = html.escape(title)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {kind}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
        f'aria-label="{label}"><title>{label}</title>'
        f'<text class="title" x="{_LEFT}" y="14" font-size="12">{label}</text>'
        + "".join(body)
        + "</svg>"
    )


def _axes(top: float, *, percent: bool = False) -> list[str]:
    bottom = _HEIGHT - _BOTTOM
    return [
        f'<line class="axis" x1="{_LEFT}" y1="{bottom}" x2="{_WIDTH - _RIGHT}" y2="{bottom}" '
        'stroke="currentColor" stroke-width="1"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" '
        'stroke="currentColor" stroke-width="1"/>',
        f'<text x="{_LEFT - 4}" y="{_TOP + 4}" font-size="10" text-anchor="end">'
        f"{html.escape(f'{top:.0%}' if percent else _number(top))}</text>",
        f'<text x="{_LEFT - 4}" y="{bottom}" font-size="10" text-anchor="end">0</text>',
    ]


def time_series(
    title: str, labels: Sequence[str], values: Sequence[float], *, kind: str = "series"
) -> str:
    """A line of ``values`` over ``labels`` (e.g. minutes), one dot per point with a tooltip.

    Examples
    --------
    >>> svg = time_series("requests", ["10:00", "10:01"], [3, 5])
    >>> svg.startswith('<svg') and svg.count('class="point"') == 2
    True
    """
    top = max([float(v) for v in values] + [0.0]) or 1.0
    width = _WIDTH - _LEFT - _RIGHT
    height = _HEIGHT - _TOP - _BOTTOM
    step = width / max(1, len(values) - 1)
    points = [
        (_LEFT + i * step if len(values) > 1 else _LEFT + width / 2, _TOP + height * (1 - v / top))
        for i, v in enumerate(float(v) for v in values)
    ]
    body = _axes(top)
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(
            f'<polyline class="line" points="{path}" fill="none" stroke="currentColor" '
            'stroke-width="1.5"/>'
        )
    for (x, y), label, value in zip(points, labels, values, strict=True):
        tip = html.escape(f"{label}: {_number(float(value))}")
        body.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2.5" data-tooltip="{tip}">'
            f"<title>{tip}</title></circle>"
        )
    if labels:
        bottom = _HEIGHT - _BOTTOM + 14
        body.append(
            f'<text x="{_LEFT}" y="{bottom}" font-size="10">{html.escape(labels[0])}</text>'
        )
        body.append(
            f'<text x="{_WIDTH - _RIGHT}" y="{bottom}" font-size="10" text-anchor="end">'
            f"{html.escape(labels[-1])}</text>"
        )
    return _frame(kind, title, body)


def histogram_pair(
    title: str,
    bins: Sequence[str],
    window: Sequence[float],
    reference: Sequence[float],
    *,
    kind: str = "histogram",
) -> str:
    """Two histograms on the same bins as shares side by side: the window's (solid) and
    the training reference's (outlined).

    Examples
    --------
    >>> svg = histogram_pair("predictions", ["<1", ">=1"], [3, 1], [1, 1])
    >>> svg.count('class="bar window"'), svg.count('class="bar reference"')
    (2, 2)
    """
    shares = [_shares(window), _shares(reference)]
    top = max([*shares[0], *shares[1], 0.0]) or 1.0
    width = _WIDTH - _LEFT - _RIGHT
    height = _HEIGHT - _TOP - _BOTTOM
    slot = width / max(1, len(bins))
    bar = max(1.0, slot * 0.4)
    body = _axes(top, percent=True)
    for i, label in enumerate(bins):
        for j, (series, share) in enumerate(
            (("window", shares[0][i]), ("reference", shares[1][i]))
        ):
            h = height * share / top
            x = _LEFT + i * slot + slot * 0.1 + j * bar
            y = _TOP + height - h
            tip = html.escape(f"{series} {label}: {share:.1%}")
            fill = (
                'fill="currentColor"' if series == "window" else 'fill="none" stroke="currentColor"'
            )
            body.append(
                f'<rect class="bar {series}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" {fill} data-tooltip="{tip}"><title>{tip}</title></rect>'
            )
    bottom = _HEIGHT - _BOTTOM + 14
    if bins:
        body.append(f'<text x="{_LEFT}" y="{bottom}" font-size="10">{html.escape(bins[0])}</text>')
        body.append(
            f'<text x="{_WIDTH - _RIGHT}" y="{bottom}" font-size="10" text-anchor="end">'
            f"{html.escape(bins[-1])}</text>"
        )
    body.append(
        f'<text x="{_WIDTH - _RIGHT}" y="14" font-size="10" text-anchor="end">'
        "■ window □ training</text>"
    )
    return _frame(kind, title, body)


def _shares(counts: Sequence[float]) -> list[float]:
    total = float(sum(counts))
    return [float(c) / total if total else 0.0 for c in counts]
