"""A tune's population on one inline SVG chart: each variant's Elo (y) against its CPU-seconds (x).

One line per variant, in a colour of its own, named in a legend; drawn on the server like
`charts.elo_chart` (whose axes and ticks it shares), so the page needs no JavaScript.
"""

from __future__ import annotations

from html import escape

from zeroloop.server.charts import _PAD_BOTTOM, _PAD_LEFT, _PAD_RIGHT, _PAD_TOP, HEIGHT, WIDTH, _ticks

COLOURS = ("#4a78c2", "#d9534f", "#5cb85c", "#f0ad4e", "#8e44ad", "#16a085", "#7f8c8d", "#c0392b")


def chart(series: dict[str, list[list[float]]], *, title: str) -> str:
    """An SVG of each variant's points [CPU-seconds, Elo]; a one-line placeholder without any."""
    points = [(x, y) for line in series.values() for x, y in line]
    if not points:
        return (
            f'<svg class="chart" width="{WIDTH}" height="60" role="img"><text x="8" y="30">no ratings yet</text></svg>'
        )
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    y_low, y_high = min(p[1] for p in points), max(p[1] for p in points)
    x_high = x_high if x_high - x_low >= 1.0 else x_low + 1.0
    y_low, y_high = (y_low - 10.0, y_high + 10.0) if y_high - y_low < 1.0 else (y_low, y_high)
    margin = (y_high - y_low) * 0.05
    y_low, y_high = y_low - margin, y_high + margin
    plot_w, plot_h = WIDTH - _PAD_LEFT - _PAD_RIGHT, HEIGHT - _PAD_TOP - _PAD_BOTTOM

    def x(cpu_s: float) -> float:
        return _PAD_LEFT + (cpu_s - x_low) / (x_high - x_low) * plot_w

    def y(elo: float) -> float:
        return _PAD_TOP + (y_high - elo) / (y_high - y_low) * plot_h

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{_PAD_LEFT}" y="{_PAD_TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for tick in _ticks(y_low, y_high):
        parts.append(
            f'<line x1="{_PAD_LEFT}" x2="{WIDTH - _PAD_RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eee"/>'
            f'<text x="{_PAD_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="11">{tick:.0f}</text>'
        )
    for tick in _ticks(x_low, x_high):
        parts.append(
            f'<text x="{x(tick):.1f}" y="{HEIGHT - 12}" text-anchor="middle" font-size="11">{tick:.0f} CPU-s</text>'
        )
    for number, (variant, line) in enumerate(sorted(series.items())):
        colour = COLOURS[number % len(COLOURS)]
        name = variant.split("~", 1)[-1]
        drawn = " ".join(f"{x(cx):.1f},{y(ey):.1f}" for cx, ey in line)
        parts.append(f'<polyline class="variant" points="{drawn}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for cx, ey in line:
            parts.append(
                f'<circle cx="{x(cx):.1f}" cy="{y(ey):.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)}: {ey:.0f} Elo after {cx:.0f} CPU-s</title></circle>"
            )
        parts.append(
            f'<text x="{_PAD_LEFT + 8}" y="{_PAD_TOP + 14 + 13 * number}" font-size="11" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
