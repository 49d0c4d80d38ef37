"""Read the charts of a page back: each `svg.chart` with its series' data points, its models and its texts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Chart:
    """One chart of a page as its SVG states it."""

    name: str
    empty: bool
    series: dict[str, list[list[float]]] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)  # rating charts: the model of each point, in x order
    intervals: int = 0  # rating charts: error bars drawn
    texts: list[str] = field(default_factory=list)
    polylines: int = 0
    bars: int = 0


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, Chart] = {}
        self.current: Chart | None = None
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "svg" and "chart" in (found.get("class") or "").split():
            name = found.get("data-chart") or ""
            assert name not in self.charts, f"two charts named {name}"
            self.current = self.charts[name] = Chart(name, found.get("data-empty") == "1")
            self.depth = 0
        if self.current is None:
            return
        if tag == "svg":
            self.depth += 1
        elif tag == "g" and found.get("data-series") is not None:
            self.current.series[found["data-series"] or ""] = json.loads(found.get("data-points") or "[]")
        elif tag == "circle" and found.get("data-model") is not None:
            self.current.models.append(found["data-model"] or "")
        elif tag == "line" and found.get("class") == "interval":
            self.current.intervals += 1
        elif tag == "polyline":
            self.current.polylines += 1
        elif tag == "rect" and found.get("class") == "bar":
            self.current.bars += 1

    def handle_endtag(self, tag: str) -> None:
        if self.current is not None and tag == "svg":
            self.depth -= 1
            if self.depth == 0:
                self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is not None and data.strip():
            self.current.texts.append(data.strip())


def charts_in(html: str) -> dict[str, Chart]:
    """Every chart of `html` by its name."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return reader.charts
