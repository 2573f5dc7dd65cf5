"""The depth chart: a backend's error at every Lua path through the network, against the tolerance band.

An inline SVG inside the HTML pages (no plotting library, no script, no namespace URL): x is the
traced paths in execution order, y the error relative to each layer's scale on a log axis. Drawn: the
tolerance (the band's upper edge, grey), float32 Torch7's own rounding as a reference line (measured
against Torch7 runs where there are any, else a stand-in named in the legend), and the backend's
error, a dot per path, red where it leaves the band. A reader sees at a glance where a port leaves the
band and whether it comes back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

FLOOR = 1e-17  # exact agreement is drawn at the bottom of the axis

WIDTH, HEIGHT = 760, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 14, 46


@dataclass(frozen=True)
class Series:
    """Values by position (None: no value at that path)."""

    label: str
    values: list[float | None]
    colour: str


def depth_chart(paths: list[str], error: list[float | None], tolerance: list[float | None],
                reference: Series | None = None, *, title: str = "", failed: list[bool] | None = None) -> str:
    """The SVG chart as a string. ``error`` and ``tolerance`` are relative to each path's scale."""
    if not paths:
        return ""
    values = [v for v in [*error, *tolerance, *(reference.values if reference else [])]
              if v is not None and math.isfinite(v) and v > 0]
    low = min(values, default=1e-8)
    high = max(values, default=1.0)
    y_min = 10 ** math.floor(math.log10(max(min(low, 1e-8), FLOOR)))
    y_max = 10 ** math.ceil(math.log10(max(high, 1e-7) * 1.5))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * (i + 0.5) / len(paths))

    def y(value: float | None) -> float | None:
        if value is None or not math.isfinite(value):
            return None
        value = max(value, y_min)
        fraction = (math.log10(value) - math.log10(y_min)) / (math.log10(y_max) - math.log10(y_min))
        return TOP + plot_h * (1 - min(1.0, fraction))

    parts = [f'<svg width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10">']
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>')
    decade = y_min
    while decade <= y_max * 1.0001:
        yy = y(decade)
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e6e6e6"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{yy + 3:.1f}" text-anchor="end">1e{round(math.log10(decade))}</text>')
        decade *= 10
    # the band: tolerance per path as a filled step area from the floor
    band = _polyline([(x(i), y(v)) for i, v in enumerate(tolerance)])
    if band:
        parts.append(f'<polyline points="{band}" fill="none" stroke="#888" stroke-width="1.5"/>')
    if reference is not None:
        line = _polyline([(x(i), y(v)) for i, v in enumerate(reference.values)])
        if line:
            parts.append(f'<polyline points="{line}" fill="none" stroke="{reference.colour}" stroke-width="1.2" '
                         'stroke-dasharray="4 3"/>')
    failed = failed or [False] * len(paths)
    for i, value in enumerate(error):
        yy = y(value if value is None or value > 0 else FLOOR)
        if yy is None:
            continue
        colour = "#c0392b" if failed[i] else "#1a4f8b"
        parts.append(f'<circle cx="{x(i):.1f}" cy="{yy:.1f}" r="2.6" fill="{colour}">'
                     f"<title>{escape(paths[i])}: {value:.3g}</title></circle>")
    step = max(1, len(paths) // 12)
    for i in range(0, len(paths), step):
        parts.append(f'<text x="{x(i):.1f}" y="{TOP + plot_h + 12}" text-anchor="end" '
                     f'transform="rotate(-35 {x(i):.1f} {TOP + plot_h + 12})">{escape(paths[i])}</text>')
    legend = [("#1a4f8b", "error / layer scale (red: outside the band)"), ("#888", "tolerance")]
    if reference is not None:
        legend.append((reference.colour, reference.label))
    lx = LEFT
    for colour, label in legend:
        parts.append(f'<rect x="{lx}" y="{HEIGHT - 10}" width="10" height="3" fill="{colour}"/>'
                     f'<text x="{lx + 14}" y="{HEIGHT - 6}">{escape(label)}</text>')
        lx += 18 + 6 * len(label)
    parts.append("</svg>")
    return "".join(parts)


def _polyline(points: list[tuple[float, float | None]]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points if py is not None)


def backend_chart(report, backend, reference: Series | None = None) -> str:
    """The chart of one backend of a drift report: its accumulated view against its tolerances."""
    results = backend.accumulated
    paths = [r.lua_path for r in results]
    error = [r.comparison.max_rel if r.comparison is not None else None for r in results]
    tolerance = [r.comparison.tolerance_rtol if r.comparison is not None else None for r in results]
    failed = [not r.passed for r in results]
    return depth_chart(paths, error, tolerance, reference, failed=failed,
                       title=f"{backend.spec.label}: error through the network")
