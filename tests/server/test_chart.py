"""The Elo chart and the JSON-safe ratings behind it: intervals drawn when known, never infinity."""

from __future__ import annotations

import json
import math

from zeroloop.control import views
from zeroloop.pipeline.ratings import Rating
from zeroloop.server import charts


def test_the_chart_draws_each_point_with_its_interval_and_says_when_there_is_none() -> None:
    assert "no ratings yet" in charts.elo_chart([])
    points = [
        {"model_id": "m1", "elo": 100.0, "half_width": 50.0, "at": 1000.0},
        {"model_id": "m2", "elo": 180.0, "half_width": None, "at": 2000.0},
        {"model_id": "m<3>", "elo": 240.0, "half_width": math.inf, "at": 3000.0},
    ]
    svg = charts.elo_chart(points)
    assert svg.count('class="point"') == 3
    assert "m1: 100 ± 50" in svg and "m2: 180<" in svg  # no interval shown where none is known
    assert "m&lt;3&gt;: 240<" in svg and "inf" not in svg  # escaped, and an unbounded interval is not drawn


def test_an_unbounded_interval_reads_as_unknown_in_json() -> None:
    rated = views._rating(Rating(120.0, math.inf))
    assert rated == {"elo": 120.0, "half_width": None, "text": "120 ± inf"}
    assert json.loads(json.dumps(rated, allow_nan=False)) == rated
    assert views._rating(Rating(None))["half_width"] is None
