"""Every chart of the dashboard in headless Chromium: what it draws is what the store holds, and it shows on screen.

The store holds three rounds driven through the real coordinator (tests/server/history.py).
Each page is loaded in one Chromium (tests/server/browser.py) and every chart on it is read
back from the DOM (its series' `data-points`) and compared with what the test wrote or what
the store says; each chart is screenshotted, clipped to itself, and the screenshot is
checked to contain the colours its series are drawn in. The JSON series and the standing
are checked on both backends.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from tests.server import history as made
from tests.server import png
from tests.server.browser import Browser
from tests.server.conftest import running_server
from tests.server.history import KEY, START, History, export_counts, steps, train_counts
from tests.server.svg import Chart, charts_in
from tests.server.test_dashboard import chromium
from zeroloop.app import App
from zeroloop.config import Settings, StoreSettings
from zeroloop.control import views
from zeroloop.control.readings import SETTLE_S
from zeroloop.control.tokens import Role, Tokens
from zeroloop.server.charts import PALETTE
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import readings as reading_queries
from zeroloop.store.schema import jobs, nodes


@pytest.fixture
def charted(store_url: str, tmp_path: Path, settings: Settings) -> Iterator[tuple[App, History]]:
    """An App on a fake clock whose store holds the history of tests/server/history.py."""
    clock = FakeClock(START)
    with App(
        Settings(data_dir=tmp_path / "data", store=StoreSettings(url=store_url)), upgrade=False, clock=clock
    ) as app:
        yield app, made.make_history(app, clock)


def _models(app: App) -> dict[str, dict[str, object]]:
    return {model["id"]: model for model in views.models(app, KEY)}


def _compute_bounds(app: App, at: float, field: str) -> tuple[float, float]:
    """The compute (hours) of the jobs finished by `at` less SETTLE_S, and by `at`: a placement lies between."""
    with app.store.read() as conn:
        rows = conn.execute(
            sa.select(jobs.c.finished_at, jobs.c.claimed_at, jobs.c.result, nodes.c.gpus, nodes.c.slots)
            .select_from(jobs.join(nodes, nodes.c.id == jobs.c.lease_node))
            .where(jobs.c.config_key == KEY, jobs.c.finished_at.is_not(None))
        ).all()

    def used(row: sa.Row[tuple[float, float, dict[str, object], list[object], int]]) -> float:
        if field == "cpu_s":
            return float(row.result["counts"]["cpu_s"])  # type: ignore[index,arg-type]
        return (row.finished_at - row.claimed_at) * len(row.gpus) / row.slots

    low = sum(used(row) for row in rows if row.finished_at <= at - SETTLE_S) / 3600
    high = sum(used(row) for row in rows if row.finished_at <= at) / 3600
    return low, high


def _check_strength(app: App, history: History, charts: dict[str, Chart]) -> None:
    models = _models(app)
    order = sorted(history.models, key=lambda model_id: float(models[model_id]["created_at"]))  # type: ignore[arg-type]
    elo = [float(models[m]["rating"]["elo"]) for m in order]  # type: ignore[index]
    assert charts["elo_time"].models == order and charts["elo_time"].intervals == 3
    assert charts["elo_time"].series["models"] == [
        [float(models[m]["created_at"]), e]
        for m, e in zip(order, elo, strict=True)  # type: ignore[arg-type]
    ]
    samples = [4.0 * made.SELFPLAY_SAMPLES * number for number in (1, 2, 3)]  # four selfplay jobs a round
    assert charts["elo_samples"].series["models"] == [[s, e] for s, e in zip(samples, elo, strict=True)]
    for chart, field in (("elo_compute", "cpu_s"), ("elo_gpu", "gpu_s")):
        placed = charts[chart].series["models"]
        assert [point[1] for point in placed] == elo
        for (hours, _elo), model_id in zip(placed, order, strict=True):
            low, high = _compute_bounds(app, float(models[model_id]["created_at"]), field)  # type: ignore[arg-type]
            assert low - 1e-9 <= hours <= high + 1e-9, (chart, model_id, low, hours, high)


def _check_training(history: History, charts: dict[str, Chart]) -> None:
    runs = {
        f"round {iteration}": [[float(step), loss] for step, loss, _p, _v in steps(number)]
        for number, iteration in zip((1, 2, 3), history.iterations, strict=True)
    }
    assert charts["training_loss"].series == runs
    assert charts["loss_parts"].series == {
        name: [[float(point[0]), point[index]] for point in steps(3)]
        for index, name in ((1, "loss"), (2, "policy_loss"), (3, "value_loss"))
    }


def _check_selfplay(history: History, charts: dict[str, Chart]) -> None:
    rates = charts["games_per_s"].series["games/s"]
    times = history.readings
    played = sum(rate * (at - times[times.index(at) - 1]) for at, rate in rates)
    assert played == pytest.approx(12 * made.SELFPLAY_GAMES)  # twelve selfplay jobs between the first and last reading
    rounds = history.iterations
    assert charts["samples_per_round"].series == {
        "played since the previous round": [[float(r), 4.0 * made.SELFPLAY_SAMPLES] for r in rounds[1:]],
        "in the round's training window": [
            [float(r), export_counts(n)["source_samples"]] for n, r in zip((1, 2, 3), rounds, strict=True)
        ],
    }


def _check_diagnostics(history: History, charts: dict[str, Chart], page: str) -> None:
    rounds = list(zip((1, 2, 3), history.iterations, strict=True))

    def per_round(counts: object, *names: str) -> dict[str, list[list[float]]]:
        return {name: [[float(r), counts(n)[name]] for n, r in rounds] for name in names}  # type: ignore[operator]

    assert charts["round_losses"].series == per_round(train_counts, "loss", "policy_loss", "value_loss")
    assert charts["round_value_accuracy"].series == per_round(
        train_counts, "value_accuracy_end", "value_accuracy_middle", "value_accuracy_opening"
    )
    assert charts["round_policy"].series == per_round(
        train_counts, "policy_agreement", "policy_entropy", "target_entropy"
    )
    assert charts["round_outcomes"].series == per_round(
        export_counts, "outcome_draw", "outcome_win_seat0", "outcome_win_seat1"
    )
    assert charts["round_lengths"].series == per_round(
        export_counts, "length_mean", "length_p10", "length_p50", "length_p90"
    )
    assert charts["round_export.source_samples"].series == per_round(export_counts, "source_samples")
    assert "round_train.steps" not in charts and "train.steps 300" in page  # the same every round: said, not drawn


def _finished_waits(app: App) -> list[list[float]]:
    """Per reading window (from the previous reading's counted_until to its own), the mean wait from due to claim of
    the selfplay jobs that finished in it, from the jobs table: the points the wait chart must draw."""
    with app.store.read() as conn:
        ends = [float(row["figures"]["counted_until"]) for row in reading_queries.list_readings(conn, since=0.0)]
        finishes = conn.execute(
            sa.select(jobs.c.finished_at, jobs.c.claimed_at - jobs.c.run_after).where(
                jobs.c.type == "selfplay", jobs.c.finished_at.is_not(None), jobs.c.claimed_at.is_not(None)
            )
        ).all()
    found = []
    for start, end in zip([-1.0, *ends], ends, strict=False):
        waited = [float(wait) for at, wait in finishes if start < at <= end]
        if waited:
            found.append([end, sum(waited) / len(waited)])
    return found


def _check_queue(history: History, charts: dict[str, Chart], expected_waits: list[list[float]]) -> None:
    depth = charts["queue_depth"].series
    assert depth["evaluate"][-2:] == [[history.readings[-2], 3.0], [history.readings[-1], 3.0]]  # the backlog
    assert max(value for _at, value in depth["selfplay"]) == 2.0
    assert {at for series in depth.values() for at, _v in series} <= set(history.readings)
    # Two selfplay jobs are claimed one after the other once they waited made.SELFPLAY_WAIT_S: 60 s and 120 s.
    waits = charts["queue_wait"].series["selfplay"]
    assert waits == expected_waits and {value for _at, value in waits} <= {60.0, 90.0, 120.0}
    oldest = charts["queue_oldest"].series["selfplay"]
    assert oldest and all(value == made.SELFPLAY_WAIT_S for _at, value in oldest)


def _check_nodes(history: History, charts: dict[str, Chart]) -> None:
    states = charts["node_states"].series
    assert [value for _at, value in states["active"]] == [2.0] * (len(history.readings) - 2) + [1.0, 1.0]
    assert states["draining"] == [[history.readings[-2], 1.0], [history.readings[-1], 1.0]]
    assert {value for _at, value in charts["cost_per_hour"].series["per hour"]} == {made.CPU_PRICE + made.GPU_PRICE}
    end = history.readings[-1]
    assert charts["cost_total"].series["so far"][-1] == [
        end,
        pytest.approx((made.CPU_PRICE + made.GPU_PRICE) * (end - START) / 3600),
    ]


def _drawn_colours(name: str, chart: Chart) -> set[str]:
    """The colours a chart's series are drawn in (filled points and bars, and lines)."""
    if name.startswith("elo_"):
        return {"#2e7d32", "#4a78c2"}  # production and archived points (the rejected one is hollow)
    if name == "node_states":
        return {"#2e7d32", "#f9a825"}  # active and draining
    return set(PALETTE[: len(chart.series)])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_chart_draws_what_the_store_holds_and_shows_in_chromium(
    charted: tuple[App, History], tmp_path: Path
) -> None:
    app, history = charted
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with running_server(app, loopback=True) as url, Browser(chromium(), tmp_path / "profile") as browser:
        page = browser.open(f"{url}/dashboard/pipelines/{KEY}")
        pipeline, shot = charts_in(page), browser.chart_shots(shots)
        browser.screenshot(shots / "pipeline-page.png")
        queue = charts_in(browser.open(f"{url}/dashboard/queue"))
        shot.update(browser.chart_shots(shots))
        node = charts_in(browser.open(f"{url}/dashboard/nodes"))
        shot.update(browser.chart_shots(shots))
        alone = charts_in(browser.open(f"{url}/dashboard/charts/elo_samples?config={KEY}&hours=24"))
        browser.screenshot(shots / "elo_samples-alone.png")
        refused = browser.open(f"{url}/dashboard/charts/elo_samples")
    _check_strength(app, history, pipeline)
    _check_training(history, pipeline)
    _check_selfplay(history, pipeline)
    _check_diagnostics(history, pipeline, page)
    _check_queue(history, queue, _finished_waits(app))
    _check_nodes(history, node)
    everything = {**pipeline, **queue, **node}
    assert not [name for name, chart in everything.items() if chart.empty]  # the history fills every chart
    assert sorted(shot) == sorted(everything)  # one screenshot per chart
    for name, chart in everything.items():
        seen = png.colours(shot[name])
        missing = [colour for colour in _drawn_colours(name, chart) if seen[colour] < 10]
        assert not missing, f"{name}: its screenshot lacks the colours {missing} its series are drawn in"
    assert alone["elo_samples"].series == pipeline["elo_samples"].series  # the same data, drawn alone
    assert not charts_in(refused) and "add ?config=CONFIG_KEY" in refused  # a pipeline's chart needs its pipeline


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_pipeline_page_says_why_production_is_production_and_shows_decisions_as_evidence(
    charted: tuple[App, History], tmp_path: Path
) -> None:
    app, history = charted
    first, second, _third = history.models
    with running_server(app, loopback=True) as url, Browser(chromium(), tmp_path / "profile") as browser:
        page = browser.open(f"{url}/dashboard/pipelines/{KEY}")
        models = browser.open(f"{url}/dashboard/models")
        browser.screenshot(tmp_path / "models.png")
    standing = page[page.index('id="standing"') : page.index("</ul>", page.index('id="standing"'))]
    assert (
        f"{second} is production because the promotion gate accepted it: against {first} it won 3, drew 15" in standing
    )
    assert (
        f"{first} (archived) rates +" in standing and "production is the newest model that passed the gate" in standing
    )
    assert "the regression watchdog rolls back to" in standing and "it rated" in standing
    decisions = page[page.index('id="decisions"') :]
    assert f"against production ({first})" in decisions and "production against random" in decisions
    assert "may be more than 50 Elo worse than the best" in decisions  # the third round's rejection
    assert '{"' not in decisions and "&quot;" not in decisions  # no JSON left
    assert f'id="standing-{KEY}"' in models and f"{first} (archived) rates +" in models


def _client(app: App, url: str) -> tuple[httpx.Client, dict[str, str]]:
    viewer, _ = Tokens(app.store).create(Role.VIEWER)
    return httpx.Client(base_url=url, timeout=30), {"Authorization": f"Bearer {viewer}"}


def test_the_json_api_serves_the_series_and_the_standing(charted: tuple[App, History]) -> None:
    app, history = charted
    first, second, _third = history.models
    with running_server(app) as url:
        client, auth = _client(app, url)
        with client:
            assert client.get(f"/api/pipelines/{KEY}/series").status_code == 401  # a viewer token is needed
            found = client.get(f"/api/pipelines/{KEY}/series", headers=auth).json()
            standing = client.get(f"/api/pipelines/{KEY}/standing", headers=auth).json()
            queue = client.get("/api/series/queue", headers=auth).json()
            recent = client.get("/api/series/nodes", params={"hours": 70 / 3600}, headers=auth).json()
            bad = [client.get("/api/series/nodes", params={"hours": h}, headers=auth) for h in ("0", "nan", "1e9")]
            unknown = client.get("/api/pipelines/no_such_2p/series", headers=auth)
    models = _models(app)
    assert {m["model_id"]: m["elo"] for m in found["strength"]["models"]} == {
        m: models[m]["rating"]["elo"]  # type: ignore[index]
        for m in history.models
    }
    assert found["strength"]["compute"]["field"] == "cpu_s" and found["strength"]["unplaced"] == 0
    assert [run["iteration"] for run in found["training_runs"]] == history.iterations
    assert [entry["round"] for entry in found["rounds"]] == history.iterations
    assert found["rounds"][0]["train"] == train_counts(1)
    assert standing["model_id"] == second and standing["promotion"]["how"] == "gate"
    assert (standing["predecessor"]["model_id"], standing["predecessor"]["games"]) == (first, 20)
    assert [item["model_id"] for item in standing["rated_above"]] == [first]
    assert standing["rated_above"][0]["difference"] > 0 and standing["lines"][0].startswith(second)
    assert queue["queued"]["evaluate"][-1] == [history.readings[-1], 3.0]
    assert [at for at, _count in recent["cost_total"]] == history.readings[-2:]  # the last 70 s only
    assert [(answer.status_code, "hours" in answer.json()["detail"]) for answer in bad] == [(400, True)] * 3
    assert unknown.status_code == 400 and "no_such_2p" in unknown.json()["detail"]
    assert math.isfinite(recent["cost_total"][-1][1])


def test_a_new_pipeline_shows_why_each_chart_is_empty_and_an_unknown_chart_is_refused(app: App) -> None:
    with app.store.transaction() as conn:
        pipeline_queries.ensure_pipeline(conn, KEY, app.clock())
    with running_server(app, loopback=True) as url, httpx.Client(base_url=url, timeout=30) as client:
        pages = {
            path: client.get(path) for path in (f"/dashboard/pipelines/{KEY}", "/dashboard/queue", "/dashboard/nodes")
        }
        unknown = client.get(f"/dashboard/charts/no_such_chart?config={KEY}")
        wrong = client.get("/dashboard/charts/elo_time?config=no_such_2p")
        standing = client.get(f"/api/pipelines/{KEY}/standing")
    assert all(page.status_code == 200 for page in pages.values())
    drawn = {name: chart for page in pages.values() for name, chart in charts_in(page.text).items()}
    assert drawn and all(chart.empty and chart.texts for chart in drawn.values())  # each says why, in words
    assert "no training run reported its loss yet" in " ".join(drawn["training_loss"].texts)
    assert 'id="standing"' not in pages[f"/dashboard/pipelines/{KEY}"].text  # no production model: nothing to explain
    assert unknown.status_code == 404 and "no chart 'no_such_chart' here; the charts: elo_compute" in unescape(
        unknown.text
    )
    assert wrong.status_code == 404 and "no pipeline 'no_such_2p'" in unescape(wrong.text)
    assert standing.status_code == 200 and standing.json() is None
