"""The leader's readings behind the charts over time, on both backends: waits, nodes, cost, compute counted once."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock, run_async
from zeroloop.app import App
from zeroloop.cluster.leases import LEADER
from zeroloop.cluster.nodes import NodeInfo
from zeroloop.config import Settings, StoreSettings
from zeroloop.control import readings as readings_module
from zeroloop.control import series
from zeroloop.control.readings import SETTLE_S, THIN_BUCKET_S, Readings, readings_daemon
from zeroloop.daemons.daemon import DaemonContext, Leadership
from zeroloop.errors import LeaseError
from zeroloop.store.queries import pipelines as pipeline_queries
from zeroloop.store.queries import readings as queries
from zeroloop.store.schema import jobs, readings

KEY = "tic_tac_toe_2p"
START = 1_767_225_600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def zl(store_url: str, tmp_path: Path, settings: Settings, clock: FakeClock) -> Iterator[App]:
    """An App on the backend under test whose every part reads `clock`."""
    with App(
        Settings(data_dir=tmp_path / "data", store=StoreSettings(url=store_url)), upgrade=False, clock=clock
    ) as app:
        with app.store.transaction() as conn:
            pipeline_queries.ensure_pipeline(conn, KEY, clock())
        app.nodes.register(
            NodeInfo(id="n1", host="h", provider="local", cpu_count=8, memory_bytes=2**33, disk_bytes=2**40,
                     cost_per_hour=2.0, slots=2, gpus=[{"name": "L4"}]),
        )  # fmt: skip
        yield app


def _finish(app: App, clock: FakeClock, run_s: float, counts: dict[str, float]) -> int:
    """Run one selfplay job on n1 for `run_s` seconds (the clock moves) and complete it with `counts`."""
    job = app.queue.enqueue("selfplay", KEY, {})
    lease = app.queue.claim("n1")
    assert lease is not None and lease.job.id == job.id
    for _ in range(int(run_s // 20)):
        clock.advance(20.0)
        app.queue.heartbeat(job.id, lease.token)  # as a worker does, well within the lease
    clock.advance(run_s % 20)
    app.queue.complete(job.id, lease.token, {"artifact_sha256": "a" * 64, "counts": counts})
    return job.id


def test_a_reading_holds_the_queue_its_waits_the_nodes_and_their_cost(zl: App, clock: FakeClock) -> None:
    take = Readings(zl.store, zl.settings.dashboard, clock=clock).take
    for _ in range(2):
        zl.queue.enqueue("selfplay", KEY, {})
    first = take()
    assert first is not None and first["queue"]["selfplay"] == {
        "queued": 2, "running": 0, "due": 2, "oldest_due_s": 0.0, "finished": 0, "mean_wait_s": None,
        "max_wait_s": None,
    }  # fmt: skip
    clock.advance(90.0)
    lease = zl.queue.claim("n1")  # waited 90 s
    assert lease is not None
    clock.advance(30.0)
    zl.queue.complete(lease.job.id, lease.token, {"counts": {}})
    second = take()
    assert second is not None and second["queue"]["selfplay"] == {
        "queued": 1, "running": 0, "due": 1, "oldest_due_s": 120.0, "finished": 0, "mean_wait_s": None,
        "max_wait_s": None,
    }  # fmt: skip  # the job finished just now: it is counted once its finish is SETTLE_S old
    assert second["nodes"] == {"active": 1} and second["cost_per_hour"] == 2.0
    assert second["cost_total"] == pytest.approx(2.0 * 120.0 / 3600.0)
    clock.advance(SETTLE_S)
    third = take()
    assert third is not None and third["queue"]["selfplay"]["finished"] == 1
    assert third["queue"]["selfplay"]["mean_wait_s"] == 90.0
    # The other job finishes at the very time of a reading, after it: the next window counts it.
    lease = zl.queue.claim("n1")  # waited 90 + 30 + SETTLE_S
    assert lease is not None
    zl.queue.complete(lease.job.id, lease.token, {"counts": {}})
    clock.advance(SETTLE_S)
    fourth = take()
    assert fourth is not None and fourth["queue"]["selfplay"]["finished"] == 1
    assert fourth["queue"]["selfplay"]["mean_wait_s"] == 120.0 + SETTLE_S
    clock.advance(SETTLE_S)
    fifth = take()
    assert fifth is not None and "selfplay" not in fifth["queue"]  # nothing queued, running or finished: counted once
    found = series.queue_series(zl)
    assert [value for _at, value in found["queued"]["selfplay"]] == [2.0, 1.0, 1.0, 0.0, 0.0]
    windows_end = [START + 120.0, START + 120.0 + SETTLE_S]  # a window's waits are placed at its end
    assert found["mean_wait_s"]["selfplay"] == [[windows_end[0], 90.0], [windows_end[1], 120.0 + SETTLE_S]]


@pytest.mark.parametrize(
    ("runs", "counted"),
    [
        # Finished at +1, +2, +3 and five at +4: the first reading takes 3 and ends at +3; the
        # five of one instant go together into the next, above the limit; then nothing is left.
        ((1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0), [3.0, 8.0, 8.0, 8.0]),
        # Finished at +1 and four at +2: the batch of 3 would split the instant +2, so the first
        # reading ends before it (one job), and the next takes all four of it.
        ((1.0, 1.0, 0.0, 0.0, 0.0), [1.0, 5.0, 5.0, 5.0]),
        ((1.0, 1.0), [2.0, 2.0, 2.0, 2.0]),  # under the limit: all at once
    ],
)
def test_a_reading_counts_at_most_its_share_of_jobs_and_the_rest_in_the_next(
    zl: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, runs: tuple[float, ...], counted: list[float]
) -> None:
    monkeypatch.setattr(readings_module, "MAX_JOBS_PER_READING", 3)
    for run_s in runs:
        _finish(zl, clock, run_s, {"cpu_s": 1.0})
    clock.advance(SETTLE_S + 1.0)
    take = Readings(zl.store, zl.settings.dashboard, clock=clock).take
    found = [take() for _ in range(4)]
    assert [reading["pipelines"][KEY]["jobs"] for reading in found if reading is not None] == counted
    assert found[-1] is not None and found[-1]["pipelines"][KEY]["cpu_s"] == float(len(runs))  # each once


def test_a_reading_is_dropped_when_another_was_recorded_meanwhile(
    zl: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _finish(zl, clock, 1.0, {"cpu_s": 5.0})
    clock.advance(SETTLE_S + 1.0)
    first, second = (Readings(zl.store, zl.settings.dashboard, clock=clock) for _ in range(2))
    original = readings_module.figures
    interrupted: list[bool] = []

    def meanwhile(conn: Any, now: float, previous: Any) -> dict[str, Any]:
        found = original(conn, now, previous)
        if not interrupted:
            interrupted.append(True)
            assert second.take() is not None  # the other leader records its reading while this one is reading
        return found

    monkeypatch.setattr(readings_module, "figures", meanwhile)
    assert first.take() is None and first.skipped == 1 and interrupted == [True]
    with zl.store.read() as conn:
        rows = queries.list_readings(conn, since=0.0)
    assert len(rows) == 1 and rows[0]["figures"]["pipelines"][KEY]["cpu_s"] == 5.0  # counted once


def test_compute_is_counted_once_per_job_even_when_its_finish_lands_late_and_outlives_the_job(
    zl: App, clock: FakeClock
) -> None:
    take = Readings(zl.store, zl.settings.dashboard, clock=clock).take
    take()
    _finish(zl, clock, 100.0, {"games": 4, "cpu_s": 150.0})
    clock.advance(60.0)
    assert take()["pipelines"][KEY]["jobs"] == 0.0  # type: ignore[index]  # finished 60 s ago: not settled yet
    clock.advance(SETTLE_S)
    totals = take()["pipelines"][KEY]
    assert (totals["jobs"], totals["jobs_with_cpu"], totals["cpu_s"], totals["slot_s"]) == (1.0, 1.0, 150.0, 100.0)
    assert totals["gpu_s"] == 100.0 * 1 / 2  # one GPU shared by two slots
    # A job whose completion is dated before the last reading (a late commit, a worker's clock behind)
    # still counts, once: each reading counts up to SETTLE_S before it.
    reading_at = clock()
    clock.now = reading_at - 10.0
    _finish(zl, clock, 0.0, {"games": 4})  # no cpu_s: wall time only
    clock.now = reading_at + 60.0
    counts = [take()["pipelines"][KEY]["jobs"]]
    clock.advance(SETTLE_S)
    counts += [take()["pipelines"][KEY]["jobs"], take()["pipelines"][KEY]["jobs"]]
    assert counts == [1.0, 2.0, 2.0]
    with zl.store.transaction() as conn:  # retention deletes the finished jobs; the totals stay
        conn.execute(sa.delete(jobs))
    clock.advance(600.0)
    totals = take()["pipelines"][KEY]
    assert (totals["jobs"], totals["jobs_with_cpu"], totals["cpu_s"]) == (2.0, 1.0, 150.0)
    assert series.compute_measure(totals)["field"] == "slot_s"  # one job never said its CPU time
    assert series.compute_measure({**totals, "jobs_with_cpu": 2.0})["field"] == "cpu_s"


def test_old_readings_are_thinned_to_one_an_hour_and_recent_ones_all_kept(zl: App, clock: FakeClock) -> None:
    zl.settings.dashboard.readings_full_days = 1.0
    old = START - 3 * 86400.0  # three days ago, on the hour
    with zl.store.transaction() as conn:
        for minute in range(180):  # three hours of readings, one a minute
            queries.insert_reading(conn, old + 60.0 * minute, {"pipelines": {}})
        for minute in range(30):  # the last half hour
            queries.insert_reading(conn, START - 1800.0 + 60.0 * minute, {"pipelines": {}})
    recorder = Readings(zl.store, zl.settings.dashboard, clock=clock)
    recorder.take()
    with zl.store.read() as conn:
        kept = [float(at) for at in conn.execute(sa.select(readings.c.at).order_by(readings.c.at)).scalars()]
    assert kept[:3] == [old, old + THIN_BUCKET_S, old + 2 * THIN_BUCKET_S]  # the first of each old hour
    assert len(kept) == 3 + 30 + 1 and recorder.thinned == 177
    with zl.store.transaction() as conn:
        assert queries.thin_readings(conn, before=START - 86400.0, bucket_s=THIN_BUCKET_S) == 0  # thinned already


@run_async
async def test_only_the_leader_takes_readings(zl: App, clock: FakeClock) -> None:
    follower = readings_daemon(DaemonContext(zl, Leadership(), clock))
    with pytest.raises(LeaseError):
        await follower.run_once()
    with zl.store.read() as conn:
        assert queries.latest_reading(conn) is None
    token = zl.leases.acquire(LEADER)
    assert token is not None
    leader = readings_daemon(DaemonContext(zl, Leadership(held=True, token=token), clock))
    await leader.run_once()
    with zl.store.read() as conn:
        assert queries.latest_reading(conn) is not None
    assert leader.details() == {"taken": 1, "skipped": 0, "thinned": 0}


def test_a_long_range_is_read_at_evenly_spread_readings_the_newest_always_in(zl: App, clock: FakeClock) -> None:
    with zl.store.transaction() as conn:
        for minute in range(1500):
            queue = {"selfplay": {"queued": minute, "running": 0, "due": 0, "oldest_due_s": None}}
            queries.insert_reading(conn, START - 60.0 * (1499 - minute), {"queue": queue, "counted_until": 0.0})
    found = series.queue_series(zl, hours=48)["queued"]["selfplay"]
    assert len(found) == series.MAX_READINGS and found[-1] == [START, 1499.0]
    gaps = {round(later[0] - earlier[0]) for earlier, later in itertools.pairwise(found)}
    assert gaps <= {120, 180}  # every 2.5th reading: even spacing
    assert len(series.queue_series(zl, hours=5)["queued"]["selfplay"]) == 5 * 60 + 1  # a short range: every one


def test_a_model_is_placed_at_the_samples_and_compute_interpolated_between_readings(zl: App, clock: FakeClock) -> None:
    def totals(samples: float, cpu_s: float) -> dict[str, object]:
        pipeline = {"samples_total": samples, "cpu_s": cpu_s, "slot_s": cpu_s, "gpu_s": 0.0, "jobs": 1.0,
                    "jobs_with_cpu": 1.0}  # fmt: skip
        return {"pipelines": {KEY: pipeline}}

    with zl.store.transaction() as conn:
        queries.insert_reading(conn, START, {**totals(100.0, 0.0), "counted_until": START - SETTLE_S})
        queries.insert_reading(conn, START + 400.0, {**totals(500.0, 3600.0), "counted_until": START + 400 - SETTLE_S})
    for at, sha in ((START - 60.0, "a"), (START + 100.0, "b"), (START + 500.0, "c")):
        clock.now = at
        model = zl.models.register_candidate(
            config_key=KEY, artifact_sha256=sha * 64, parent_id=None, window_sha256=None, job_ids=[], iteration=1
        )
        zl.models.record_match(
            config_key=KEY, model_id=model.id, opponent="random", wins=8, draws=1, losses=1, elo_diff=0.0, elo_ci=0.0,
            job_id=None,
        )  # fmt: skip
    found = series.strength(zl, KEY)
    placed = {m["created_at"]: (m["samples_total"], m["cpu_h"]) for m in found["models"]}
    # samples: a quarter of the way from the first reading to the second; compute: placed by counted_until
    assert placed[START + 100.0] == (200.0, pytest.approx((100.0 + SETTLE_S) / 400.0))
    assert placed[START + 500.0] == (500.0, 1.0)  # after the newest reading: its totals
    assert placed[START - 60.0] == (None, None) and found["unplaced"] == 1  # trained before the first reading
