"""The SVG charts: each states the data it draws, thins long series, draws intervals only when known, never infinity."""

from __future__ import annotations

import json
import math

from tests.server.svg import charts_in
from zeroloop.control import views
from zeroloop.pipeline.ratings import Rating
from zeroloop.server import charts
from zeroloop.server.charts import MAX_POINTS, Line


def test_a_line_chart_states_the_points_of_each_line_it_draws() -> None:
    svg = charts.line_chart(
        "loss", "loss <per step>", [Line("run <1>", [(200, 1.5), (100, 2.0)]), Line("run 2", [(100, 1.0)])],
        x_label="step",
    )  # fmt: skip
    (chart,) = charts_in(svg).values()
    assert chart.name == "loss" and not chart.empty
    assert chart.series == {"run <1>": [[100.0, 2.0], [200.0, 1.5]], "run 2": [[100.0, 1.0]]}  # sorted by x
    assert chart.polylines == 2 and "run <1>" in chart.texts and "run 2" in chart.texts  # a legend: two lines
    assert "run &lt;1&gt;" in svg and "<per step>" not in svg  # names are escaped


def test_a_chart_without_data_says_why_instead() -> None:
    (chart,) = charts_in(charts.line_chart("queue_depth", "jobs", [Line("selfplay", [])], empty="no readings")).values()
    assert chart.empty and chart.texts[-1] == "no readings" and chart.series == {}
    (rated,) = charts_in(charts.rating_chart("elo", "Elo", [], lambda m: m["at"])).values()
    assert rated.empty and rated.texts[-1] == "no rated models yet"


def test_a_long_series_is_thinned_to_the_last_point_of_each_stretch() -> None:
    points = [(float(i), float(i * i)) for i in range(1500)]
    (chart,) = charts_in(charts.line_chart("long", "long", [Line("y", points)])).values()
    drawn = chart.series["y"]
    assert len(drawn) == MAX_POINTS and drawn[-1] == [1499.0, 1499.0**2]
    assert drawn == [[float(i), float(i * i)] for i in (int((k + 1) * 2.5) - 1 for k in range(MAX_POINTS))]
    short = [(float(i), 1.0) for i in range(MAX_POINTS)]
    assert charts.thin(short) == [[x, y] for x, y in short]  # at the limit nothing is dropped


def test_rounds_and_counts_get_whole_numbered_ticks() -> None:
    line = [Line("a", [(0, 0.0), (1, 50.0), (2, 100.0)])]  # the y ticks are 0, 20, ...: the x ticks are the probe
    whole = charts_in(charts.line_chart("r", "rounds", line, x_whole=True))["r"]
    assert {"0", "1", "2"} <= set(whole.texts) and "0.5" not in whole.texts
    fractional = charts_in(charts.line_chart("r", "rounds", line))["r"]
    assert "0.5" in fractional.texts  # the same chart without whole ticks: the probe sees a fraction


def test_the_rating_chart_draws_intervals_only_when_known_and_joins_the_promoted_models() -> None:
    models = [
        {"model_id": "m3", "stage": "production", "elo": 240.0, "half_width": math.inf, "at": 3000.0, "promoted_at": 3},
        {"model_id": "m1", "stage": "archived", "elo": 100.0, "half_width": 50.0, "at": 1000.0, "promoted_at": 1},
        {"model_id": "m<2>", "stage": "rejected", "elo": 180.0, "half_width": None, "at": 2000.0, "promoted_at": None},
        {"model_id": "m4", "stage": "candidate", "elo": 200.0, "half_width": 10.0, "at": None, "promoted_at": None},
    ]
    svg = charts.rating_chart("elo_time", "Elo", models, lambda m: m["at"], x_time=True)
    chart = charts_in(svg)["elo_time"]
    assert chart.models == ["m1", "m<2>", "m3"]  # in x order; m4 has no x and is left out
    assert chart.series["models"] == [[1000.0, 100.0], [2000.0, 180.0], [3000.0, 240.0]]
    assert chart.intervals == 1  # only m1's interval is known and finite
    assert "m1 (archived): 100 ± 50" in chart.texts and "m3 (production): 240" in chart.texts
    assert "inf" not in svg and "m&lt;2&gt;" in svg
    assert svg.count('class="promoted"') == 1  # m1 and m3, the promoted ones, are joined
    single = charts.rating_chart("e", "Elo", models[:1], lambda m: m["at"])
    assert 'class="promoted"' not in single  # one promoted model: nothing to join


def test_the_bar_chart_states_its_bars() -> None:
    svg = charts.bar_chart("samples", "per round", [Line("new", [(1, 240), (2, 240)]), Line("window", [(0, 120)])])
    chart = charts_in(svg)["samples"]
    assert chart.series == {"new": [[1.0, 240.0], [2.0, 240.0]], "window": [[0.0, 120.0]]} and chart.bars == 3


def test_an_unbounded_interval_reads_as_unknown_in_json() -> None:
    rated = views._rating(Rating(120.0, math.inf))
    assert rated == {"elo": 120.0, "half_width": None, "text": "120 ± inf"}
    assert json.loads(json.dumps(rated, allow_nan=False)) == rated
    assert views._rating(Rating(None))["half_width"] is None
