"""Small self-contained SVG charts: lines, and markers whose hover text (an SVG ``<title>``) tells what they are.

Plain SVG needs no JavaScript, no network and no plotting library in the browser, and is a pure function
of its data (so it is unit-tested as text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .markup import html_text

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


@dataclass
class Marker:
    """A point drawn on top of the lines; ``title`` is shown when the pointer rests on it."""

    x: float
    y: float
    title: str
    kind: str = "checkpoint"


@dataclass
class Chart:
    title: str
    x_label: str
    y_label: str
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    markers: list[Marker] = field(default_factory=list)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / (n - 1)
    return [lo + i * step for i in range(n)]


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def svg(chart: Chart, width: int = 960, height: int = 320, css_class: str = "wp-chart") -> str:
    """The chart as an inline ``<svg>`` element (a note instead when there is nothing to draw)."""
    pts = [(x, y) for s in chart.series.values() for x, y in s if _finite(x) and _finite(y)]
    pts += [(m.x, m.y) for m in chart.markers if _finite(m.x) and _finite(m.y)]
    if not pts:
        return f"<p class='{css_class}-empty'>{html_text(chart.title)}: nothing to draw yet.</p>"
    left, right, top, bottom = 64, 16, 28, 40
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-9, y1 + abs(y1) * 0.1 + 1e-9
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [
        f"<svg class='{css_class}' xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' "
        f"width='100%' role='img' aria-label='{html_text(chart.title)}' "
        f"style='max-width: {width}px; font: 11px sans-serif; background: #fff'>",
        f"<text x='{left}' y='16' font-weight='bold'>{html_text(chart.title)}</text>",
        f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='#ccc'/>",
    ]
    for t in _ticks(y0, y1):
        out.append(f"<line x1='{left}' x2='{left + pw}' y1='{sy(t):.1f}' y2='{sy(t):.1f}' stroke='#eee'/>")
        out.append(f"<text x='{left - 4}' y='{sy(t) + 4:.1f}' text-anchor='end'>{_fmt(t)}</text>")
    for t in _ticks(x0, x1):
        out.append(f"<text x='{sx(t):.1f}' y='{top + ph + 14}' text-anchor='middle'>{_fmt(t)}</text>")
    out.append(f"<text x='{left + pw / 2:.0f}' y='{height - 6}' text-anchor='middle'>{html_text(chart.x_label)}</text>")
    out.append(
        f"<text transform='translate(12 {top + ph / 2:.0f}) rotate(-90)' text-anchor='middle'>{html_text(chart.y_label)}</text>"
    )
    for i, (name, series) in enumerate(chart.series.items()):
        color = PALETTE[i % len(PALETTE)]
        line = [(x, y) for x, y in series if _finite(x) and _finite(y)]
        if not line:
            continue
        d = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in line)
        out.append(f"<polyline class='series' fill='none' stroke='{color}' stroke-width='1.5' points='{d}'>")
        out.append(f"<title>{html_text(name)}</title></polyline>")
        out.append(f"<text x='{left + pw - 4}' y='{top + 14 + 13 * i}' text-anchor='end' fill='{color}'>{html_text(name)}</text>")
    for m in chart.markers:
        if not (_finite(m.x) and _finite(m.y)):
            continue
        out.append(
            f"<circle class='marker {html_text(m.kind)}' cx='{sx(m.x):.1f}' cy='{sy(m.y):.1f}' r='5' "
            f"fill='#fff' stroke='#d62728' stroke-width='2'><title>{html_text(m.title)}</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)


def series_from_rows(rows: Sequence[dict], keys: Sequence[str], x: str = "step") -> dict[str, list[tuple[float, float]]]:
    """Per key, the (x, value) points of the rows that hold both."""
    return {k: [(r[x], r[k]) for r in rows if _finite(r.get(x)) and _finite(r.get(k))] for k in keys}
