"""A label's distribution as a small inline SVG histogram (no plotting library needed).

Regression labels are binned into equal-width bins between their minimum and maximum;
classification labels are counted per class. Missing labels are counted, not drawn.

Examples
--------
>>> svg = histogram_svg("logS", [-1.0, -2.0, -2.5, None], task="regression", bins=2)
>>> svg.startswith('<svg class="plot histogram"') and "1 missing" in svg
True
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Histogram", "bin_labels", "histogram_svg"]

WIDTH, HEIGHT = 360, 180
_LEFT, _RIGHT, _TOP, _BOTTOM = 40, 10, 22, 34


@dataclass(frozen=True)
class Histogram:
    """Bars (``edges`` label, count) of one label, plus how many values were missing."""

    label: str
    bars: tuple[tuple[str, int], ...]
    missing: int
    lowest: float | None = None
    highest: float | None = None


def bin_labels(
    label: str, values: Sequence[float | None], *, task: str, bins: int = 20
) -> Histogram:
    """Count ``values`` into bars: per class for classification, equal bins otherwise.

    Examples
    --------
    >>> bin_labels("active", [0.0, 1.0, 1.0], task="classification").bars
    (('0', 1), ('1', 2))
    >>> [count for _, count in bin_labels("y", [0.0, 0.5, 1.0], task="regression", bins=2).bars]
    [1, 2]
    """
    present = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    missing = len(values) - len(present)
    if not present:
        return Histogram(label, (), missing)
    if task == "classification":
        counts = Counter(present)
        bars = tuple((_class_name(value), counts[value]) for value in sorted(counts))
        return Histogram(label, bars, missing, min(present), max(present))
    lowest, highest = min(present), max(present)
    n = max(1, min(bins, len(set(present))))
    width = (highest - lowest) / n or 1.0
    counts_by_bin = [0] * n
    for value in present:
        counts_by_bin[min(int((value - lowest) / width), n - 1)] += 1
    bars = tuple(
        (f"{lowest + i * width:.3g} to {lowest + (i + 1) * width:.3g}", count)
        for i, count in enumerate(counts_by_bin)
    )
    return Histogram(label, bars, missing, lowest, highest)


def _class_name(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"


def histogram_svg(label: str, values: Sequence[float | None], *, task: str, bins: int = 20) -> str:
    """Return an ``<svg class="plot histogram">`` of the label's distribution.

    Every bar has a ``data-tooltip`` (its range or class, and count) for the shared
    hover tooltip. All text is escaped: the label comes from the user's data file.
    """
    histogram = bin_labels(label, values, task=task, bins=bins)
    name = escape(label, quote=True)
    parts = [
        f'<svg class="plot histogram" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'data-label="{name}" role="img" aria-label="distribution of {name}">',
        f'<text x="{_LEFT}" y="14" class="title" font-size="12">{name}'
        + (f" ({histogram.missing} missing)" if histogram.missing else "")
        + "</text>",
    ]
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    base = _TOP + plot_h
    parts.append(
        f'<line x1="{_LEFT}" y1="{base}" x2="{_LEFT + plot_w}" y2="{base}" stroke="#5f6b7a"/>'
    )
    if histogram.bars:
        tallest = max(count for _, count in histogram.bars) or 1
        step = plot_w / len(histogram.bars)
        for i, (edges, count) in enumerate(histogram.bars):
            height = plot_h * count / tallest
            x = _LEFT + i * step
            tip = escape(f"{edges}: {count}", quote=True)
            parts.append(
                f'<rect class="bar" x="{x + 0.5:.1f}" y="{base - height:.1f}" '
                f'width="{max(step - 1, 1):.1f}" height="{height:.1f}" fill="#1f6feb" '
                f'data-count="{count}" data-tooltip="{tip}"/>'
            )
        parts.append(
            f'<text x="{_LEFT - 4}" y="{_TOP + 8}" font-size="10" text-anchor="end">'
            f"{tallest}</text>"
            f'<text x="{_LEFT - 4}" y="{base}" font-size="10" text-anchor="end">0</text>'
        )
        if task == "classification":
            for i, (edges, _) in enumerate(histogram.bars):
                x = _LEFT + (i + 0.5) * step
                parts.append(
                    f'<text x="{x:.1f}" y="{base + 14}" font-size="10" text-anchor="middle">'
                    f"{escape(edges)}</text>"
                )
        else:
            parts.append(
                f'<text x="{_LEFT}" y="{base + 14}" font-size="10">{histogram.lowest:.3g}</text>'
                f'<text x="{_LEFT + plot_w}" y="{base + 14}" font-size="10" '
                f'text-anchor="end">{histogram.highest:.3g}</text>'
            )
    else:
        parts.append(
            f'<text x="{_LEFT + 8}" y="{_TOP + plot_h / 2:.0f}" font-size="12">no labels</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
