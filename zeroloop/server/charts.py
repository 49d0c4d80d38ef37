"""Charts drawn on the server as inline SVG: no JavaScript, nothing fetched by the browser.

Three kinds cover every chart of the dashboard:

- `line_chart`: named series of (x, y) points over time or over a number (steps, rounds);
- `bar_chart`: grouped bars per whole-number category (rounds);
- `rating_chart`: models' joint ratings with their intervals, coloured by stage, the
  promoted ones joined in the order they were trained, against time, samples or compute.

Every chart is an `<svg class="chart" data-chart="NAME">`; each series is a
`<g class="series" data-series="NAME" data-points="[[x, y], ...]">` holding the data
values it draws (times in epoch seconds), so a test, or a user's script reading the page,
can check what is drawn against the store. A series of more than `MAX_POINTS` points is
thinned to that many (each kept point the last of its stretch) before it is drawn and listed.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

WIDTH = 600
HEIGHT = 250
SMALL_WIDTH = 340
SMALL_HEIGHT = 190
MAX_POINTS = 600
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 60, 16, 14, 38
_LEGEND_ROW = 16
_TITLE_ROW = 18
PALETTE = ("#4a78c2", "#e07b39", "#3a9d5d", "#c2474a", "#8a5cc2", "#8c6d31", "#d45fa0", "#4ab3c2", "#7f7f7f")
STAGE_COLOURS = {"production": "#2e7d32", "archived": "#4a78c2", "candidate": "#f9a825", "rejected": "#9e9e9e"}
STATE_COLOURS = {
    "active": "#2e7d32", "draining": "#f9a825", "drained": "#c2a04a", "requested": "#8a5cc2", "launching": "#4ab3c2",
    "terminating": "#7f7f7f", "terminated": "#bdbdbd", "lost": "#c62828", "failed": "#6d1b1b",
}  # fmt: skip


@dataclass(frozen=True)
class Line:
    """One named series of (x, y) points, in data units."""

    name: str
    points: Sequence[Sequence[float]]
    colour: str | None = None
    dashed: bool = False


def number(value: float) -> str:
    """A number as an axis or tooltip shows it: 12.3k, 4.5M, 0.0123, 17."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}"


def _ticks(low: float, high: float, count: int = 5, *, whole: bool = False) -> list[float]:
    """Round-numbered ticks covering low..high (whole numbers only when `whole`)."""
    span = high - low
    raw = span / max(1, count)
    step = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    if whole:
        step = max(1.0, round(step))
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _when(at: float, span_s: float) -> str:
    return time.strftime("%m-%d %H:%M" if span_s > 86400 else "%H:%M", time.localtime(at))


def thin(points: Sequence[Sequence[float]], most: int = MAX_POINTS) -> list[list[float]]:
    """At most `most` of `points` (sorted by x): the last point of each of `most` equal stretches of the list."""
    found = [[float(x), float(y)] for x, y in points]
    if len(found) <= most:
        return found
    step = len(found) / most
    return [found[min(len(found) - 1, int((i + 1) * step) - 1)] for i in range(most)]


def _data(points: Sequence[Sequence[float]]) -> str:
    return escape(json.dumps([[x, y] for x, y in points], separators=(",", ":")), quote=True)


def _empty(name: str, title: str, why: str, width: int) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(name)}" data-empty="1" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="48" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<text x="8" y="28" fill="#757575">{escape(why)}</text></svg>'
    )


def _short(text: str, width: int) -> str:
    """`text` cut to what fits in `width` pixels at the title's size (the whole text stays in the SVG's title)."""
    most = int((width - _PAD_LEFT) / 6.8)
    return text if len(text) <= most else text[: most - 1] + "…"


def _legend(entries: Sequence[tuple[str, str]], width: int) -> list[tuple[int, float, str, str]]:
    """Where each legend entry goes: (row, x, label, colour), left to right, wrapping at the chart's width."""
    placed = []
    row, x = 0, float(_PAD_LEFT)
    for label, colour in entries:
        text = label if len(label) <= 48 else label[:47] + "…"
        size = 14 + 6.3 * len(text) + 14
        if x + size > width and x > _PAD_LEFT:
            row, x = row + 1, float(_PAD_LEFT)
        placed.append((row, x, text, colour))
        x += size
    return placed


class _Frame:
    """The plot area of one chart: its scales, axes and legend."""

    def __init__(
        self,
        name: str,
        title: str,
        xs: Sequence[float],
        ys: Sequence[float],
        *,
        width: int,
        height: int,
        legend: Sequence[tuple[str, str]],
        x_time: bool,
        x_label: str,
        y_label: str,
        y_zero: bool,
        x_pad: float | None = None,
        x_whole: bool = False,
        y_whole: bool = False,
    ) -> None:
        self.width, self.height, self.x_time = width, height, x_time
        placed = _legend(legend if len(legend) > 1 else (), width)
        legend_top = _PAD_TOP + _TITLE_ROW
        self.top = legend_top + (_LEGEND_ROW * (1 + max(row for row, _x, _l, _c in placed)) if placed else 0)
        y_low, y_high = min(ys), max(ys)
        if y_zero:
            y_low, y_high = min(0.0, y_low), max(0.0, y_high)
        if y_high - y_low < 1e-9:
            pad = max(abs(y_high) * 0.1, 1.0)
            y_low, y_high = y_low - pad, y_high + pad
        margin = (y_high - y_low) * 0.06
        self.y_low = y_low - (margin if y_low != 0.0 or not y_zero else 0.0)
        self.y_high = y_high + margin
        x_low, x_high = min(xs), max(xs)
        if x_high - x_low < 1e-9:
            pad = 30.0 if x_time else max(abs(x_high) * 0.1, 1.0)
            x_low, x_high = x_low - pad, x_high + pad
        pad = (x_high - x_low) * 0.03 if x_pad is None else x_pad
        self.x_low, self.x_high = x_low - pad, x_high + pad
        self.plot_w = width - _PAD_LEFT - _PAD_RIGHT
        self.plot_h = height - self.top - _PAD_BOTTOM
        self.parts = [
            f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
            f"<title>{escape(title)}</title>",
            f'<text class="title" x="{_PAD_LEFT}" y="{_PAD_TOP + 1}" font-size="12" font-weight="600">'
            f"{escape(_short(title, width))}</text>",
            f'<rect x="{_PAD_LEFT}" y="{self.top}" width="{self.plot_w}" height="{self.plot_h}" fill="#fafafa" '
            'stroke="#ccc"/>',
        ]
        for row, lx, label, colour in placed:
            ly = legend_top + row * _LEGEND_ROW
            self.parts.append(
                f'<rect x="{lx:.0f}" y="{ly - 1}" width="10" height="10" fill="{colour}"/>'
                f'<text class="legend" x="{lx + 14:.0f}" y="{ly + 8}" font-size="11">{escape(label)}</text>'
            )
        for tick in _ticks(self.y_low, self.y_high, whole=y_whole):
            y = self.y(tick)
            self.parts.append(
                f'<line x1="{_PAD_LEFT}" x2="{width - _PAD_RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                f'<text x="{_PAD_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{number(tick)}</text>'
            )
        if x_time:
            span = self.x_high - self.x_low
            marks = [(self.x_low, "start"), ((self.x_low + self.x_high) / 2, "middle"), (self.x_high, "end")]
            labels = [(at, anchor, _when(at, span)) for at, anchor in marks]
        else:
            ticks = _ticks(self.x_low, self.x_high, 6, whole=x_whole)
            labels = [(tick, "middle", number(tick)) for tick in ticks if self.x_low <= tick <= self.x_high]
        for at, anchor, label in labels:
            self.parts.append(
                f'<text x="{self.x(at):.1f}" y="{height - 22}" text-anchor="{anchor}" font-size="11">{label}</text>'
            )
        if x_label:
            self.parts.append(
                f'<text x="{_PAD_LEFT + self.plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" font-size="11" '
                f'fill="#555">{escape(x_label)}</text>'
            )
        if y_label:
            middle = self.top + self.plot_h / 2
            self.parts.append(
                f'<text x="12" y="{middle:.0f}" text-anchor="middle" font-size="11" fill="#555" '
                f'transform="rotate(-90 12 {middle:.0f})">{escape(y_label)}</text>'
            )

    def x(self, value: float) -> float:
        return _PAD_LEFT + (value - self.x_low) / (self.x_high - self.x_low) * self.plot_w

    def y(self, value: float) -> float:
        return self.top + (self.y_high - value) / (self.y_high - self.y_low) * self.plot_h

    def tip(self, x: float, y: float) -> str:
        return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(x)) if self.x_time else number(x)}: {number(y)}"

    def done(self) -> str:
        return "".join([*self.parts, "</svg>"])


def _colours(lines: Sequence[Line], fixed: dict[str, str] | None = None) -> list[str]:
    return [line.colour or (fixed or {}).get(line.name) or PALETTE[i % len(PALETTE)] for i, line in enumerate(lines)]


def line_chart(
    name: str,
    title: str,
    lines: Sequence[Line],
    *,
    x_time: bool = False,
    x_label: str = "",
    y_label: str = "",
    y_zero: bool = False,
    empty: str = "no data yet",
    small: bool = False,
    colours: dict[str, str] | None = None,
    x_whole: bool = False,
    y_whole: bool = False,
) -> str:
    """An SVG of each line's points (x over time when `x_time`), one colour per line, a legend when several.

    `x_whole`, `y_whole`: that axis counts whole things (rounds, jobs, nodes): its ticks are whole numbers.
    """
    drawn = [(line, thin(sorted(line.points, key=lambda p: p[0]))) for line in lines]
    drawn = [(line, points) for line, points in drawn if points]
    width, height = (SMALL_WIDTH, SMALL_HEIGHT) if small else (WIDTH, HEIGHT)
    if not drawn:
        return _empty(name, title, empty, width)
    palette = _colours([line for line, _ in drawn], colours)
    frame = _Frame(
        name, title, [p[0] for _, ps in drawn for p in ps], [p[1] for _, ps in drawn for p in ps], width=width,
        height=height, legend=[(line.name, c) for (line, _), c in zip(drawn, palette, strict=True)], x_time=x_time,
        x_label=x_label, y_label=y_label, y_zero=y_zero, x_whole=x_whole, y_whole=y_whole,
    )  # fmt: skip
    for (line, points), colour in zip(drawn, palette, strict=True):
        path = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in points)
        dash = ' stroke-dasharray="5 3"' if line.dashed else ""
        frame.parts.append(
            f'<g class="series" data-series="{escape(line.name)}" data-points="{_data(points)}">'
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        if len(points) <= 60:
            for x, y in points:
                frame.parts.append(
                    f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="2.5" fill="{colour}">'
                    f"<title>{escape(line.name)} {escape(frame.tip(x, y))}</title></circle>"
                )
        frame.parts.append("</g>")
    return frame.done()


def bar_chart(
    name: str,
    title: str,
    bars: Sequence[Line],
    *,
    x_label: str = "",
    y_label: str = "",
    empty: str = "no data yet",
    small: bool = False,
) -> str:
    """An SVG of grouped bars: each line's points are (category, value), categories whole numbers (rounds)."""
    drawn = [(line, [[float(x), float(y)] for x, y in line.points]) for line in bars]
    drawn = [(line, points) for line, points in drawn if points]
    width, height = (SMALL_WIDTH, SMALL_HEIGHT) if small else (WIDTH, HEIGHT)
    if not drawn:
        return _empty(name, title, empty, width)
    palette = _colours([line for line, _ in drawn])
    xs = sorted({p[0] for _, ps in drawn for p in ps})
    frame = _Frame(
        name, title, xs, [p[1] for _, ps in drawn for p in ps], width=width, height=height,
        legend=[(line.name, c) for (line, _), c in zip(drawn, palette, strict=True)], x_time=False, x_label=x_label,
        y_label=y_label, y_zero=True, x_pad=0.6, x_whole=True,
    )  # fmt: skip
    slot = frame.plot_w / max(1.0, frame.x_high - frame.x_low) * 0.8
    each = slot / len(drawn)
    for index, ((line, points), colour) in enumerate(zip(drawn, palette, strict=True)):
        frame.parts.append(f'<g class="series" data-series="{escape(line.name)}" data-points="{_data(points)}">')
        for x, y in points:
            left = frame.x(x) - slot / 2 + index * each
            top, base = frame.y(max(y, 0.0)), frame.y(min(y, 0.0))
            frame.parts.append(
                f'<rect class="bar" x="{left:.1f}" y="{top:.1f}" width="{max(each - 1, 1):.1f}" '
                f'height="{max(base - top, 0.5):.1f}" fill="{colour}"><title>{escape(line.name)} '
                f"{number(x)}: {number(y)}</title></rect>"
            )
        frame.parts.append("</g>")
    return frame.done()


def rating_chart(
    name: str,
    title: str,
    models: Sequence[dict[str, Any]],
    x_of: Callable[[dict[str, Any]], float | None],
    *,
    x_time: bool = False,
    x_label: str = "",
    y_label: str = "Elo",
    empty: str = "no rated models yet",
) -> str:
    """An SVG of each model's rating (`elo`, `half_width`) against `x_of(model)`; models without an x are left out.

    Points are coloured by `stage`; the interval is an error bar (class `interval`); the
    promoted models (production and archived ones) are joined by a line in x order.
    """
    placed = [(float(x), model) for model in models if (x := x_of(model)) is not None and model.get("elo") is not None]
    placed.sort(key=lambda item: item[0])
    if not placed:
        return _empty(name, title, empty, WIDTH)

    def half(model: dict[str, Any]) -> float:
        width = model.get("half_width")
        return float(width) if width is not None and math.isfinite(width) else 0.0

    lows = [float(m["elo"]) - half(m) for _, m in placed]
    highs = [float(m["elo"]) + half(m) for _, m in placed]
    stages = [stage for stage in STAGE_COLOURS if any(m.get("stage") == stage for _, m in placed)]
    frame = _Frame(
        name, title, [x for x, _ in placed], lows + highs, width=WIDTH, height=HEIGHT,
        legend=[(stage, STAGE_COLOURS[stage]) for stage in stages] if len(stages) > 1 else [], x_time=x_time,
        x_label=x_label, y_label=y_label, y_zero=False,
    )  # fmt: skip
    promoted = [(x, m) for x, m in placed if m.get("stage") in ("production", "archived") and m.get("promoted_at")]
    if len(promoted) > 1:
        path = " ".join(f"{frame.x(x):.1f},{frame.y(float(m['elo'])):.1f}" for x, m in promoted)
        frame.parts.append(
            f'<polyline class="promoted" points="{path}" fill="none" stroke="#2e7d32" stroke-width="1.5" '
            'stroke-opacity="0.6"/>'
        )
    points = [[x, float(m["elo"])] for x, m in placed]
    frame.parts.append(f'<g class="series" data-series="models" data-points="{_data(points)}">')
    for x, model in placed:
        elo, width = float(model["elo"]), half(model)
        colour = STAGE_COLOURS.get(str(model.get("stage")), "#4a78c2")
        tip = f"{model['model_id']} ({model.get('stage')}): {elo:.0f}" + (f" ± {width:.0f}" if width else "")
        if width:
            frame.parts.append(
                f'<line class="interval" x1="{frame.x(x):.1f}" x2="{frame.x(x):.1f}" y1="{frame.y(elo - width):.1f}" '
                f'y2="{frame.y(elo + width):.1f}" stroke="{colour}" stroke-opacity="0.6"/>'
            )
        fill = "#fff" if model.get("stage") == "rejected" else colour
        size = 5 if model.get("stage") == "production" else 3.5
        frame.parts.append(
            f'<circle class="point" data-model="{escape(str(model["model_id"]))}" cx="{frame.x(x):.1f}" '
            f'cy="{frame.y(elo):.1f}" r="{size}" fill="{fill}" stroke="{colour}" stroke-width="1.5">'
            f"<title>{escape(tip)}</title></circle>"
        )
    frame.parts.append("</g>")
    return frame.done()
