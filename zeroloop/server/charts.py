"""Charts drawn on the server as inline SVG: no JavaScript, nothing fetched by the browser.

`elo_chart` plots a config key's Elo points over time, each with its interval as an error
bar and a band joining the intervals, so the page shows at a glance whether the loop is
learning and how sure the ratings are.
"""

from __future__ import annotations

import math
import time
from html import escape
from typing import Any

WIDTH = 720
HEIGHT = 260
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 56, 16, 16, 36


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round-numbered ticks covering low..high."""
    span = high - low
    raw = span / max(1, count)
    step = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step) + 1)]


def _half(value: float | None) -> float:
    """An interval half-width to draw: 0 when unknown or unbounded."""
    return float(value) if value is not None and math.isfinite(value) else 0.0


def elo_chart(points: list[dict[str, Any]], *, title: str = "Elo over time") -> str:
    """An SVG of Elo (y) against time (x) with each point's interval; `points` hold at, elo, half_width, model_id."""
    if not points:
        return (
            f'<svg class="chart" width="{WIDTH}" height="60" role="img"><text x="8" y="30">no ratings yet</text></svg>'
        )
    times = [float(p["at"]) for p in points]
    lows = [
        p["elo"] - (p["half_width"] if p["half_width"] is not None and math.isfinite(p["half_width"]) else 0.0)
        for p in points
    ]
    highs = [
        p["elo"] + (p["half_width"] if p["half_width"] is not None and math.isfinite(p["half_width"]) else 0.0)
        for p in points
    ]
    y_low, y_high = min(lows), max(highs)
    if y_high - y_low < 1.0:
        y_low, y_high = y_low - 10.0, y_high + 10.0
    margin = (y_high - y_low) * 0.05
    y_low, y_high = y_low - margin, y_high + margin
    t_low, t_high = min(times), max(times)
    if t_high - t_low < 1.0:
        t_low, t_high = t_low - 30.0, t_high + 30.0
    plot_w = WIDTH - _PAD_LEFT - _PAD_RIGHT
    plot_h = HEIGHT - _PAD_TOP - _PAD_BOTTOM

    def x(at: float) -> float:
        return _PAD_LEFT + (at - t_low) / (t_high - t_low) * plot_w

    def y(elo: float) -> float:
        return float(_PAD_TOP + (y_high - elo) / (y_high - y_low) * plot_h)

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
    for at, anchor in ((t_low, "start"), ((t_low + t_high) / 2, "middle"), (t_high, "end")):
        label = time.strftime("%m-%d %H:%M", time.localtime(at))
        parts.append(f'<text x="{x(at):.1f}" y="{HEIGHT - 12}" text-anchor="{anchor}" font-size="11">{label}</text>')
    band_top = " ".join(f"{x(t):.1f},{y(h):.1f}" for t, h in zip(times, highs, strict=True))
    band_bottom = " ".join(f"{x(t):.1f},{y(lo):.1f}" for t, lo in reversed(list(zip(times, lows, strict=True))))
    parts.append(f'<polygon class="interval" points="{band_top} {band_bottom}" fill="#4a78c2" fill-opacity="0.15"/>')
    line = " ".join(f"{x(t):.1f},{y(float(p['elo'])):.1f}" for t, p in zip(times, points, strict=True))
    parts.append(f'<polyline points="{line}" fill="none" stroke="#4a78c2" stroke-width="2"/>')
    for t, p, lo, hi in zip(times, points, lows, highs, strict=True):
        tip = f"{p['model_id']}: {p['elo']:.0f}" + (f" ± {p['half_width']:.0f}" if hi > lo else "")
        parts.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y(lo):.1f}" y2="{y(hi):.1f}" stroke="#4a78c2"/>'
            f'<circle class="point" cx="{x(t):.1f}" cy="{y(float(p["elo"])):.1f}" r="3.5" fill="#4a78c2">'
            f"<title>{escape(tip)}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
