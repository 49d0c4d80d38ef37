"""The worker side of the pipeline: claim a job, run it in a child process, store its output, report.

The order is what makes a dead worker cost at most its job in flight: the output is
uploaded to the artifact store and recorded in the manifest first; then one store
transaction completes the job (refused if the lease moved on) and publishes its event.
While the child process works, the lease is heartbeated from the event loop; a lease
that was lost (StaleLeaseError) or a job past its timeout kills the child.

Faults: a store outage is waited out with backoff and jitter (claiming, heartbeating,
reporting a result or a failure), and the executor reports it in its health details;
a result is reported once the store is back, unless the lease moved on meanwhile. Any
other exception inside a job, of any library (an OSError from a full disk, a RuntimeError
from `torch.save`, an S3 client's error when an upload is cut), fails that job with one
line naming this node and the path (zeroloop.pipeline.failures) and never ends the
executor; a malformed job (unknown type, bad payload) is failed for good. `stop()`
drains: no new job is claimed, the job in flight may finish until half of
`daemons.drain_deadline_s` has passed, and is then released, fenced by its lease token,
back to the queue without counting as a failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from zeroloop import tracing
from zeroloop.config import Settings
from zeroloop.errors import QueueError, StaleLeaseError, WorkloadError
from zeroloop.events.consumer import is_transient
from zeroloop.events.wiring import declare
from zeroloop.pipeline import child, failures, jobs
from zeroloop.pipeline.slots import SlotBudget
from zeroloop.ports import ArtifactPort, EventPort, JobPort, ModelPort
from zeroloop.queue.backpressure import NodePressure
from zeroloop.queue.jobs import Capabilities, Job, Lease, Outcome
from zeroloop.workload.protocol import Evidence

log = logging.getLogger(__name__)

declare(
    "zeroloop.pipeline.executor",
    emits=tuple(event for job_type in jobs.TYPES.values() for event in job_type.events()),
)

PROGRESS_EVERY_S = 5.0
STALL_CHECK_S = 5.0  # how often a running job's child is checked for a stall (seconds)
DRAIN_POLL_S = 0.2  # how often a running job looks whether a drain began (seconds)


class _Drained(Exception):
    """The drain grace ran out while a job was still running: release it."""


class JobExecutor:
    """Runs pipeline jobs for one node, one at a time, in a child process it keeps warm."""

    def __init__(
        self,
        models: ModelPort,
        bus: EventPort,
        queue: JobPort,
        artifacts: ArtifactPort,
        settings: Settings,
        *,
        node: str,
        capabilities: Capabilities | None = None,
        job_types: tuple[str, ...] = jobs.JOB_TYPES,
        clock: Callable[[], float] = time.time,
        budget: SlotBudget | None = None,
        pressure: NodePressure | None = None,
    ) -> None:
        """`job_types` are the pipeline job types this executor claims; the parts are the store's or the server's.

        `budget` is the node's resources when several slots share them: each claim then asks
        for what the other slots left free (see zeroloop.pipeline.slots).
        """
        self.models = models
        self.bus = bus
        self.queue = queue
        self.artifacts = artifacts
        self.settings = settings
        self.node = node
        self.capabilities = capabilities or Capabilities()
        self.job_types = job_types
        self.clock = clock
        self.budget = budget
        self.pressure = pressure  # this node's own memory and disk: past a hard limit, no selfplay is claimed
        self.workdir = settings.data_dir / "work" / node
        self._child: child.JobChild | None = None  # the job child, kept warm between jobs
        self._stopped_child: child.JobChild | None = None  # the last one started, to read its exit status
        self._stopping = asyncio.Event()
        self._drain_grace_s = settings.daemons.drain_deadline_s / 2
        self._drain_at: float | None = None  # time.monotonic() after which a running job is released
        self.jobs_done = 0
        self.jobs_released = 0
        self.jobs_failed = 0
        self.outage_since: float | None = None  # when the store became unavailable to this executor (clock time)

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, idle_wait_s: float = 0.5) -> None:
        """Claim and run jobs until stopped; wait `idle_wait_s` (seconds) when there is nothing to do.

        A finished job is reported and the next one leased in the same transaction; a lease
        in hand when stop() arrives is still run (it was taken with the last result), within
        the drain grace like any job in flight.
        """
        lease: Lease | None = None
        failures = 0
        try:
            while lease is not None or not self._stopping.is_set():
                if lease is None:
                    try:
                        lease = await asyncio.to_thread(self._claim)
                    except Exception as exc:
                        if not is_transient(exc):
                            raise
                        failures += 1
                        self._outage(exc)
                        await self._wait_stopping(self._backoff_s(failures))
                        continue
                    failures = 0
                    self.outage_since = None
                if lease is None:
                    await self._wait_stopping(idle_wait_s)
                    continue
                lease = await self._execute(lease, claim_next=True)
        finally:
            self.close()

    async def run_once(self) -> bool:
        """Claim one job and run it to its end; False when there was none to claim."""
        lease = await asyncio.to_thread(self._claim)
        if lease is None:
            return False
        await self._execute(lease, claim_next=False)
        return True

    def _types(self) -> tuple[str, ...]:
        """The job types this executor may claim now: its own, less the producers while its node is at STOP."""
        return self.job_types if self.pressure is None else self.pressure.claimable(self.job_types)

    def _claim(self) -> Lease | None:
        """Lease a job this slot may run: everything it asks for, or with a budget what the node has free."""
        if self.budget is None:
            types = self._types()
            return self.queue.claim(self.node, self.capabilities, types) if types else None
        with self.budget.claiming():
            capabilities, types = self.budget.offer(self._types())
            if not types:
                return None
            lease = self.queue.claim(self.node, capabilities, types)
            if lease is not None:
                self.budget.take(lease.job)
            return lease

    def stop(self) -> None:
        """Drain: claim nothing more; the job in flight may finish within the grace, else it is released."""
        if self._drain_at is None:
            self._drain_at = time.monotonic() + self._drain_grace_s
        self._stopping.set()

    def close(self) -> None:
        """Shut the child process down (and anything it started)."""
        self._kill_pool()

    def health(self) -> dict[str, Any]:
        """Details for the daemon health check."""
        details: dict[str, Any] = {
            "jobs_done": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "jobs_released": self.jobs_released,
            "child": self._child is not None,
        }
        if self.outage_since is not None:
            details["store_unavailable_since"] = self.outage_since
        return details

    def _outage(self, exc: BaseException) -> None:
        if self.outage_since is None:
            self.outage_since = self.clock()
            log.warning("job executor on %s: store unavailable, retrying with backoff: %s", self.node, exc)

    def _backoff_s(self, failures: int) -> float:
        """A jittered wait (seconds) after `failures` transient failures in a row."""
        cap = self.settings.daemons.outage_retry_max_s
        base = min(cap, 0.1 * 2.0 ** min(failures, 30))
        return base / 2 + random.uniform(0, base / 2)

    async def _wait_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def _drain_over(self) -> bool:
        return self._drain_at is not None and time.monotonic() >= self._drain_at

    async def _drain_expired(self) -> None:
        """Return once stop() came and its grace for the job in flight ran out."""
        # Polled, not awaited on the stop event: run_once() may be driven from more than one event loop.
        while not self._drain_over():
            await asyncio.sleep(DRAIN_POLL_S if self._drain_at is None else self._drain_at - time.monotonic())

    async def _retrying(self, what: str, call: Callable[[], Any]) -> Any:
        """Run `call` in a thread, retrying transient store failures with backoff until it succeeds.

        While draining, gives up (re-raising) once the drain grace is over: the lease then
        expires and the job is re-queued by the reaper.
        """
        failures = 0
        while True:
            try:
                result = await asyncio.to_thread(call)
            except Exception as exc:
                if not is_transient(exc) or self._drain_over():
                    raise
                failures += 1
                self._outage(exc)
                log.warning("%s: store unavailable (try %d), retrying: %s", what, failures, exc)
                await asyncio.sleep(self._backoff_s(failures))
                continue
            self.outage_since = None
            return result

    # --- one job -----------------------------------------------------------------------------

    async def _execute(self, lease: Lease, *, claim_next: bool) -> Lease | None:
        """Run one leased job to its end; return the next lease when `claim_next` and one was taken with the result.

        The job runs in a span that continues the trace it was enqueued in, so the events
        it publishes (its outcome above all) carry that trace on.
        """
        job = lease.job
        attributes: dict[str, str | int] = {
            "zeroloop.job.id": job.id,
            "zeroloop.job.type": job.type,
            "zeroloop.job.attempt": job.attempts,
            "zeroloop.config_key": job.config_key,
            "zeroloop.node": self.node,
        }
        with tracing.span(f"job {job.type}", parent=job.traceparent, attributes=attributes):
            return await self._execute_in_span(lease, claim_next=claim_next)

    async def _execute_in_span(self, lease: Lease, *, claim_next: bool) -> Lease | None:
        job, token = lease.job, lease.token
        following: Lease | None = None
        workdir = self.workdir / f"job-{job.id}-{token}"
        phase = failures.Phase("reading the job", workdir)
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(job, token, lost))
        try:
            job_type = jobs.lookup(job.type)
            payload = job_type.parse(job.payload)
            phase = failures.Phase("fetching the job's inputs", workdir)
            prepared = await asyncio.to_thread(self._prepare, job_type, job, payload, workdir)
            if job_type.started is not None:
                started = job_type.started.build(job, jobs.Started(job, payload, self.node))
                await self._retrying(f"job {job.id}", lambda: self._publish(started))
            phase = failures.Phase(f"running the {job.type} job", workdir)
            evidence = await self._run_child(job, job_type, prepared, lost)
            phase = failures.Phase("storing the output", prepared.output)
            claim = claim_next and not self._stopping.is_set()
            following = await self._retrying(
                f"job {job.id} result",
                lambda: self._finish(job, token, job_type, payload, prepared, evidence, claim_next=claim),
            )
            self.jobs_done += 1
        except StaleLeaseError as exc:
            log.warning("job %d: lease lost, result dropped (%s)", job.id, exc)
        except _Drained:
            await self._release(job, token, f"worker on node {self.node} stopped before the job finished")
        except BrokenProcessPool as exc:
            if self._stopping.is_set() or await asyncio.to_thread(self._child_told_to_stop):
                # The child went with the signal that stops this worker (a service manager or a terminal signals
                # the whole group), not for anything the job did: the attempt does not count.
                await self._release(job, token, f"the job's child process on node {self.node} was told to stop")
            else:
                log.error("job %d (%s %s) failed: %s", job.id, job.type, job.config_key, exc)
                await self._fail(job, token, f"the job's child process on node {self.node} died: {exc}")
        except QueueError as exc:  # the job itself is malformed (an unknown type, a bad payload): no retry mends it
            log.error("job %d (%s %s) refused: %s", job.id, job.type, job.config_key, exc)
            await self._fail(job, token, str(exc), retryable=False)
        except TimeoutError:
            reason = f"node {self.node}: job timed out after {job.timeout_s:g} s (in {workdir})"
            log.error("job %d (%s %s) failed: %s", job.id, job.type, job.config_key, reason)
            await self._fail(job, token, reason)
        except Exception as exc:
            # Any other exception of any library (a full disk inside torch.save, an upload cut by the
            # endpoint, a workload's own error) fails this job, naming node and path; the executor goes on.
            if is_transient(exc):  # the store went away past the drain grace: nothing can be recorded now
                log.warning("job %d: not reported (%s); its lease expires and the reaper re-queues it", job.id, exc)
            else:
                reason = failures.describe(exc, node=self.node, phase=phase, full_pct=self.settings.queue.disk_hard_pct)
                log.error("job %d (%s %s) failed: %s", job.id, job.type, job.config_key, reason, exc_info=exc)
                await self._fail(job, token, reason)
        finally:
            beat.cancel()
            shutil.rmtree(workdir, ignore_errors=True)
            if self.budget is not None:
                self.budget.give(job.id)
        return following

    async def _fail(self, job: Job, token: int, reason: str, *, retryable: bool = True) -> None:
        """Record a failed attempt; if that cannot be recorded, the lease expires and the reaper re-queues the job."""
        self.jobs_failed += 1
        try:
            await self._retrying(
                f"job {job.id} failure", lambda: self.queue.fail(job.id, token, reason[:2000], retryable=retryable)
            )
        except StaleLeaseError:
            log.warning("job %d: lease already lost; failure not recorded", job.id)
        except Exception as exc:  # noqa: BLE001 - a failure that cannot be recorded must not take the executor down
            log.error("job %d: failure not recorded (%s); its lease expires and the reaper re-queues it", job.id, exc)

    async def _release(self, job: Job, token: int, reason: str) -> None:
        """Give the job back to the queue uncounted (fenced by its token); the reaper does it if the store is down."""
        try:
            await self._retrying(f"job {job.id} release", lambda: self.queue.release(job.id, token, reason))
        except StaleLeaseError:
            log.warning("job %d: lease already lost; nothing to release", job.id)
            return
        except Exception as exc:  # noqa: BLE001 - a release that cannot be recorded must not take the executor down
            log.warning("job %d: not released (%s); its lease expires and the reaper re-queues it", job.id, exc)
            return
        self.jobs_released += 1
        log.info("job %d (%s %s) released: %s", job.id, job.type, job.config_key, reason)

    async def _heartbeat(self, job: Job, token: int, lost: asyncio.Event) -> None:
        interval = max(0.2, self.settings.queue.lease_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.queue.heartbeat, job.id, token)
            except StaleLeaseError:
                lost.set()
                return
            except Exception as exc:  # noqa: BLE001 - a beat task must end with a log line, never a lost exception
                if not is_transient(exc):
                    log.error("job %d: heartbeat failed, no more beats (the lease may expire): %s", job.id, exc)
                    return
                self._outage(exc)  # keep the job running; the next beat tries again

    async def _run_child(
        self, job: Job, job_type: jobs.JobType[Any], prepared: jobs.Prepared, lost: asyncio.Event
    ) -> Evidence:
        """Run the job's operation in the job child; kill the child on a lost lease, the drain's end, the job's
        timeout or a stall (no sign of progress for `queue.stall_after_s`)."""
        runner = self._ensure_pool()
        reports: asyncio.Queue[dict[str, float]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def on_progress(report: dict[str, float]) -> None:  # called in the thread that waits on the child
            loop.call_soon_threadsafe(reports.put_nowait, report)

        future = asyncio.ensure_future(asyncio.to_thread(runner.run, prepared.operation, prepared.request, on_progress))
        lost_wait: asyncio.Future[Any] = asyncio.ensure_future(lost.wait())
        drained: asyncio.Future[Any] = asyncio.ensure_future(self._drain_expired())
        stalled: asyncio.Future[Any] = asyncio.ensure_future(self._stalled(runner))
        progress = None
        if job_type.progress is not None:
            progress = asyncio.ensure_future(self._forward_progress(job, job_type.progress, reports))
        try:
            done, _ = await asyncio.wait(
                {future, lost_wait, drained, stalled}, timeout=job.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in (lost_wait, drained, stalled, progress):
                if waiter is not None:
                    waiter.cancel()
        if future in done:
            evidence: Evidence = future.result()
            return evidence
        self._kill_pool()
        # The child is gone, so its waiting thread ends at once: collect it, so no failure goes unretrieved.
        await asyncio.gather(future, return_exceptions=True)
        if lost.is_set():
            raise StaleLeaseError(f"job {job.id} was re-leased while it ran")
        if drained in done:
            raise _Drained
        if stalled in done:
            stall_s = self.settings.queue.stall_after_s
            raise WorkloadError(
                f"node {self.node}: job {job.id} stalled: no sign of progress for {stall_s:g} s (no progress "
                "report, its Python stack unmoved, its commands idle: a hung call?); the child was killed"
            )
        raise TimeoutError

    async def _stalled(self, runner: child.JobChild) -> None:
        """Return once the job child has shown no progress for `queue.stall_after_s` seconds (never when 0)."""
        limit = self.settings.queue.stall_after_s
        if not limit:
            await asyncio.Event().wait()  # stall detection is off: wait for cancellation
        while runner.stalled_s() < limit:
            await asyncio.sleep(min(STALL_CHECK_S, limit / 4))

    def _child_told_to_stop(self) -> bool:
        """Whether the job child ended by SIGTERM or SIGINT sent to it, rather than failing (blocking).

        Such a signal comes from whoever stops the whole node (a service manager, Slurm's
        scancel, a terminal): this executor then drains too, instead of claiming the job
        it releases again and again while the signals keep coming.
        """
        stopped = self._stopped_child is not None and self._stopped_child.told_to_stop()
        if stopped:
            self.stop()
        return stopped

    def _ensure_pool(self) -> child.JobChild:
        """The job child, started now if there is none (on the event loop's thread, which outlives it)."""
        if self._child is not None and self._child.dead:
            self._kill_pool()  # it died under the last job: whatever it started goes with it
        if self._child is None:
            self._child = child.JobChild(self.settings.workload.model_dump_json())
            self._stopped_child = self._child
        return self._child

    def _kill_pool(self) -> None:
        """Kill the job child and everything it started; the next job starts a new one."""
        if self._child is not None:
            self._child.kill()
            self._child = None

    async def _forward_progress(
        self, job: Job, event: jobs.JobEvent[jobs.Progress], reports: asyncio.Queue[dict[str, float]]
    ) -> None:
        last = -math.inf
        while True:
            report = await reports.get()
            if time.monotonic() - last < PROGRESS_EVERY_S:
                continue
            last = time.monotonic()
            await self._publish_progress(job, event, report)

    async def _publish_progress(self, job: Job, event: jobs.JobEvent[jobs.Progress], report: dict[str, float]) -> None:
        """Publish one progress event; best effort: during a store outage it is skipped (the next one follows)."""
        try:
            await asyncio.to_thread(self._publish, event.build(job, jobs.Progress(job, report)))
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._outage(exc)

    # --- before and after (blocking; run in a thread) ----------------------------------------

    def _prepare(self, job_type: jobs.JobType[Any], job: Job, payload: Any, workdir: Path) -> jobs.Prepared:
        """Fetch the job's inputs into the cache and build the workload request."""
        workdir.mkdir(parents=True, exist_ok=True)
        return job_type.prepare(job, payload, jobs.Parts(self.artifacts, self.models, workdir))

    def _publish(self, event: Outcome) -> None:
        event_type, payload, dedup_key = event
        self.bus.publish(event_type, payload, dedup_key=dedup_key)

    def _finish(
        self,
        job: Job,
        token: int,
        job_type: jobs.JobType[Any],
        payload: Any,
        prepared: jobs.Prepared,
        evidence: Evidence,
        *,
        claim_next: bool,
    ) -> Lease | None:
        """Upload the output; then, in one transaction, complete the job with its event and lease the next.

        The next job is leased only when `claim_next`; that lease is returned.
        """
        counts = dict(evidence.counts)
        samples = int(counts.get("positions", counts.get("samples", 0)))
        if job_type.check is not None:
            job_type.check(job, counts)  # refuse an incomplete result before uploading anything
        artifact = self.artifacts.put(
            prepared.output,
            job_type.kind,
            config_key=job.config_key,
            meta={"samples": samples, **{k: v for k, v in counts.items() if math.isfinite(float(v))}},
            producer_job_id=job.id,
        )
        result = {"artifact_sha256": artifact.sha256, "size_bytes": artifact.size_bytes, "counts": counts}
        confidence = self.settings.workload.elo_confidence
        finished = jobs.Finished(job, payload, artifact.sha256, counts, samples, confidence)
        event = job_type.outcome.build(job, finished)
        if not claim_next:
            self.queue.complete(job.id, token, result, event=event)
            return None
        if self.budget is None:
            types = self._types()
            if not types:
                self.queue.complete(job.id, token, result, event=event)
                return None
            _done, following = self.queue.complete_and_claim(
                job.id, token, result, node=self.node, capabilities=self.capabilities, types=types, event=event
            )
            return following
        with self.budget.claiming():
            self.budget.give(job.id)  # this job is done: its resources count for the next claim
            capabilities, types = self.budget.offer(self._types())
            if not types:
                self.queue.complete(job.id, token, result, event=event)
                return None
            _done, following = self.queue.complete_and_claim(
                job.id, token, result, node=self.node, capabilities=capabilities, types=types, event=event
            )
            if following is not None:
                self.budget.take(following.job)
        return following
