"""Every failure inside a job, of any library, fails that job naming node and path; the executor goes on.

The executor's own loop (`run`) takes a failing job and then a working one: it must fail the
first with one line naming the node and where, complete the second, and still be running.
The faults are real: torch.save writing to /dev/full (which refuses every write as a full
disk does), an OSError(28) with no path, a library's ValueError, an S3 endpoint that cuts
every upload half way (a TCP proxy in front of the moto server), a bad artifact kind, and
both the artifact location and the node's held directory on one full disk.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.cutproxy import CutProxy, cut_proxy
from tests.s3 import Location
from zeroloop.app import App
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import ArtifactSettings, Settings, StoreSettings, WorkloadSettings
from zeroloop.daemons.daemon import DaemonContext, HealthState, Leadership
from zeroloop.errors import ArtifactError
from zeroloop.ops.daemons import disk_space_daemon
from zeroloop.pipeline import failures, jobs
from zeroloop.pipeline.executor import JobExecutor
from zeroloop.queue.jobs import Job, JobStatus
from zeroloop.store.queries import artifacts as artifact_queries

CONFIG = "tic_tac_toe_2p"
WORKLOAD = "tests.faults.faulty_workload:FaultyWorkload"
WAIT_S = 120.0  # longest a test waits for the executor to finish its jobs (seconds), on a loaded machine
POLL_S = 0.05


def _app(store_url: str, tmp_path: Path, fault: str, artifacts: ArtifactSettings | None = None) -> App:
    plan = tmp_path / "plan"
    plan.write_text(fault)
    settings = Settings(
        data_dir=tmp_path / "data",
        store=StoreSettings(url=store_url),
        workload=WorkloadSettings(kind=WORKLOAD, command_file=plan),
        artifacts=artifacts or ArtifactSettings(),
    )
    return App(settings, upgrade=False)


async def _run_until_finished(executor: JobExecutor, app: App, job_ids: list[int]) -> list[Job]:
    """Run the executor's own loop until every job in `job_ids` left the queue for good; stop it; the jobs."""
    task = asyncio.create_task(executor.run(idle_wait_s=POLL_S))
    deadline = time.monotonic() + WAIT_S
    final = (JobStatus.COMPLETED, JobStatus.DEAD)
    try:
        while time.monotonic() < deadline:
            found = [app.queue.get(job_id) for job_id in job_ids]
            if all(job.status in final for job in found) or task.done():
                break
            await asyncio.sleep(POLL_S)
        assert not task.done(), f"the executor stopped: {task.exception() if task.done() else ''}"
        return [app.queue.get(job_id) for job_id in job_ids]
    finally:
        executor.stop()
        await asyncio.wait_for(task, timeout=WAIT_S)


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("torch_full", "RuntimeError: "),
        ("oserror28", "No space left on device at "),
        ("value", "ValueError: a library's own mistake"),
    ],
)
def test_any_exception_in_a_job_fails_it_naming_node_and_path_and_the_executor_goes_on(
    store_url: str, tmp_path: Path, settings: Settings, fault: str, says: str
) -> None:
    if fault == "torch_full":
        pytest.importorskip("torch")
    with _app(store_url, tmp_path, fault) as app:
        failing = app.queue.enqueue(jobs.SELFPLAY, CONFIG, {"games": 1}, max_attempts=1)
        working = app.queue.enqueue(jobs.SELFPLAY, CONFIG, {"games": 2}, priority=-1)  # claimed second
        executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
        failed, done = asyncio.run(_run_until_finished(executor, app, [failing.id, working.id]))
    assert failed.status is JobStatus.DEAD and done.status is JobStatus.COMPLETED
    assert failed.error is not None and failed.error.startswith("node w1: "), failed.error
    assert says in failed.error
    assert str(tmp_path / "data" / "work" / "w1" / f"job-{failing.id}-") in failed.error  # where it ran
    if fault == "oserror28":
        assert failures.FULL_DISK_HINT in failed.error
    assert (executor.jobs_failed, executor.jobs_done) == (1, 1)


@pytest.fixture
def flapping_s3(s3_location: Location, s3_endpoint: str) -> Iterator[tuple[Location, CutProxy]]:
    """The test's bucket reached through a proxy that cuts uploads while `cut_after` is set."""
    with cut_proxy(s3_endpoint) as proxy:
        options = {
            **s3_location.storage_options,
            "endpoint_url": proxy.url,
            "config_kwargs": {"retries": {"max_attempts": 1}},  # botocore's own retries: one try, so a test is quick
        }
        yield Location(s3_location.url, options), proxy


def test_an_upload_cut_mid_transfer_holds_the_output_and_the_executor_goes_on(
    store_url: str, tmp_path: Path, settings: Settings, flapping_s3: tuple[Location, CutProxy]
) -> None:
    location, proxy = flapping_s3
    artifacts = ArtifactSettings(url=location.url, storage_options=location.storage_options)
    with _app(store_url, tmp_path, "ok", artifacts) as app:
        app.artifacts.fs.retries = 1  # s3fs's retries of a failed call, likewise
        proxy.cut_after = 4096  # every upload dies after 4 KiB: the endpoint flaps for as long as it is set
        queued = [app.queue.enqueue(jobs.SELFPLAY, CONFIG, {"games": 200 + n}).id for n in range(3)]
        executor = JobExecutor(app.models, app.bus, app.queue, app.artifacts, app.settings, node="w1")
        finished = asyncio.run(_run_until_finished(executor, app, queued))
        assert proxy.cuts >= 3
        assert [job.status for job in finished] == [JobStatus.COMPLETED] * 3  # each output kept on this node
        held = app.artifacts.sole_copies_on(app.artifacts.node)
        assert sorted(held) == sorted(job.result["artifact_sha256"] for job in finished)

        proxy.cut_after = None  # the endpoint is back
        assert app.artifacts.evacuate() == 3
        assert app.artifacts.sole_copies_on(app.artifacts.node) == []
        for sha in held:
            app.artifacts.cache.remove(sha)
            assert app.artifacts.fetch(sha).is_file()  # from the bucket


def test_a_bad_kind_is_an_artifact_error_naming_the_kinds(app: App, tmp_path: Path) -> None:
    source = tmp_path / "file"
    source.write_bytes(b"bytes")
    with pytest.raises(ArtifactError, match=r"'bogus' is not an artifact kind; the kinds are game_batch, "):
        app.artifacts.put(source, "bogus")  # type: ignore[arg-type]


def test_both_disks_full_is_one_artifact_error_naming_both(
    store_url: str, tmp_path: Path, settings: Settings, small_disk: Path
) -> None:
    with _app(store_url, tmp_path, "ok", ArtifactSettings(url=(small_disk / "artifacts").as_uri())) as app:
        app.artifacts.held_dir = small_disk / "held"  # this node's place for what it could not upload: full too
        filler = small_disk / "filler"
        with filler.open("wb", buffering=0) as handle, pytest.raises(OSError):
            while True:
                handle.write(bytes(65536))
        source = tmp_path / "batch"
        source.write_bytes(os.urandom(256 * 1024))
        with pytest.raises(ArtifactError) as raised:
            app.artifacts.put(source, ArtifactKind.GAME_BATCH, config_key=CONFIG)
        message = str(raised.value)
        assert f"the artifact location file://{small_disk}/artifacts refused it (No space left on device)" in message
        assert f"holding it on node {app.artifacts.node} at {small_disk}/held failed too (No space left" in message
        with app.store.read() as conn:
            assert artifact_queries.list_artifacts(conn) == []  # nothing recorded that is not stored


def test_a_full_disk_is_recognised_through_any_library_wrapping() -> None:
    phase = failures.Phase("storing the output", "/data/work/w1/job-1-1/games.npz")
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError as inner:
            raise RuntimeError("upload failed") from inner
    except RuntimeError as wrapped:
        reason = failures.describe(wrapped, node="w1", phase=phase)
    assert reason == (
        "node w1: RuntimeError: upload failed (while storing the output, at /data/work/w1/job-1-1/games.npz) "
        f"({failures.FULL_DISK_HINT})"
    )
    bare = failures.describe(OSError(28), node="w1", phase=phase)
    assert bare == f"node w1: No space left on device at /data/work/w1/job-1-1/games.npz ({failures.FULL_DISK_HINT})"
    torch_words = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file")
    assert failures.FULL_DISK_HINT not in failures.describe(torch_words, node="w1", phase=phase)
    said = RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")
    assert failures.FULL_DISK_HINT in failures.describe(said, node="w1", phase=phase)


def test_an_output_held_on_the_node_is_uploaded_in_the_background(
    store_url: str, tmp_path: Path, settings: Settings, flapping_s3: tuple[Location, CutProxy]
) -> None:
    location, proxy = flapping_s3
    artifacts = ArtifactSettings(url=location.url, storage_options=location.storage_options)
    with _app(store_url, tmp_path, "ok", artifacts) as app:
        app.artifacts.fs.retries = 1
        proxy.cut_after = 4096
        source = tmp_path / "batch"
        source.write_bytes(os.urandom(64 * 1024))
        sha = app.artifacts.put(source, ArtifactKind.GAME_BATCH, config_key=CONFIG).sha256
        node = app.artifacts.node
        assert app.artifacts.sole_copies_on(node) == [sha]  # held: the endpoint cut the upload
        daemon = disk_space_daemon(DaemonContext(app, Leadership(), time.time))
        asyncio.run(daemon.run_once())  # the endpoint still cuts: it stays held, and the daemon is fine
        assert app.artifacts.sole_copies_on(node) == [sha]
        assert daemon.health().state is HealthState.HEALTHY and daemon.details()["uploaded_held"] == 0
        proxy.cut_after = None  # the endpoint is back: the next tick uploads it, the node need not drain
        asyncio.run(daemon.run_once())
        assert app.artifacts.sole_copies_on(node) == [] and daemon.details()["uploaded_held"] == 1
        app.artifacts.cache.remove(sha)
        assert app.artifacts.fetch(sha).read_bytes() == source.read_bytes()
