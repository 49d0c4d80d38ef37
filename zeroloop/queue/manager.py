"""The work queue's named operations: enqueue, claim, heartbeat, complete, fail, reap, cancel, retry.

Every transition changes the job row and publishes its event in one store transaction,
so the event log and the queue never disagree. A claim grants a lease with a fencing
token (the job's `lease_token`, bumped on every claim): heartbeat, complete and fail
must present the current one, so a worker whose lease was taken over can no longer
touch the job, and a result is recorded exactly once.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from zeroloop import tracing
from zeroloop.config import Settings
from zeroloop.errors import BackpressureRefused, Forbidden, QueueError, StaleLeaseError
from zeroloop.events import catalogue as ev
from zeroloop.events.bus import EventBus
from zeroloop.events.wiring import declare
from zeroloop.queue.backpressure import BackpressureLevel, BackpressureMonitor
from zeroloop.queue.jobs import NAME_PATTERN, Capabilities, Job, JobStatus, Lease, Outcome, Requirements, transition
from zeroloop.store.database import Store
from zeroloop.store.queries import jobs as queries
from zeroloop.store.values import check_json, check_text
from zeroloop.tracing import TRACE_KEY

EMITS = (
    "JOB_QUEUED",
    "JOB_CLAIMED",
    "JOB_COMPLETED",
    "JOB_FAILED",
    "JOB_LEASE_EXPIRED",
    "JOB_DEAD",
    "JOB_CANCELLED",
    "BACKPRESSURE_CHANGED",
)
declare("zeroloop.queue", emits=EMITS)

_PRIORITY_RANGE = 1_000_000
# enqueue()'s optional arguments with their defaults, in _validated()'s order.
_ENQUEUE_DEFAULTS: dict[str, Any] = {
    "payload": None, "priority": 0, "requires": None, "target_node": None, "depends_on": (),
    "idempotency_key": None, "max_attempts": None, "timeout_s": None,
}  # fmt: skip
_REAP_BATCH = 500
_ERROR_MAX_CHARS = 4000  # a failure's error text kept on the job (characters)


class JobQueue:
    """The durable work queue of one store, used by producers, workers, the reaper and the CLI."""

    def __init__(
        self,
        store: Store,
        bus: EventBus,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bus = bus
        self.settings = settings.queue
        self.breaker_recovery_s = settings.health.breaker_recovery_s
        self.clock = clock
        self.backpressure = BackpressureMonitor(store, bus, settings.queue, clock=clock)

    # --- producers ----------------------------------------------------------------------

    def enqueue(
        self,
        job_type: str,
        config_key: str,
        payload: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        requires: Requirements | Mapping[str, Any] | None = None,
        target_node: str | None = None,
        depends_on: Iterable[int] = (),
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
    ) -> Job:
        """Add a job (higher `priority` first; timeout_s: seconds one attempt may run) and return it.

        A repeated `idempotency_key` returns the job first enqueued with it, unchanged.
        Raises QueueError naming the bad argument, BackpressureRefused when the type is at STOP.
        """
        row, deps = self._validated(
            job_type, config_key, payload, priority, requires, target_node, depends_on, idempotency_key,
            max_attempts, timeout_s,
        )  # fmt: skip
        if idempotency_key is not None:
            with self.store.read() as conn:
                existing = queries.job_by_idempotency_key(conn, idempotency_key)
            if existing is not None:
                return Job.from_row(existing)
        self._refuse_at_stop(job_type)
        with self.store.transaction() as conn:
            return self._insert(conn, row, deps)

    def enqueue_many(self, requests: Sequence[Mapping[str, Any]]) -> list[Job]:
        """Enqueue several jobs in one transaction, all or none; each request holds `enqueue`'s arguments by name.

        Backpressure is checked once per job type, before the batch.
        """
        validated = []
        for request in requests:
            args = dict(request)
            try:
                job_type, config_key = args.pop("job_type"), args.pop("config_key")
            except KeyError as exc:
                raise QueueError(f"every request needs job_type and config_key; one lacks {exc}") from None
            unknown = sorted(set(args) - set(_ENQUEUE_DEFAULTS))
            if unknown:
                raise QueueError(f"unknown enqueue argument(s): {', '.join(unknown)}")
            values = [args.get(name, default) for name, default in _ENQUEUE_DEFAULTS.items()]
            validated.append(self._validated(job_type, config_key, *values))
        for job_type in sorted({row["type"] for row, _ in validated}):
            self._refuse_at_stop(job_type)
        stored: list[Job] = []
        with self.store.transaction() as conn:
            # Runs of plain jobs (no dependencies, no idempotency key) go in batched inserts
            # with one batch of JOB_QUEUED events; the others one by one. Order is kept.
            for plain, run in itertools.groupby(
                validated, key=lambda item: not item[1] and item[0]["idempotency_key"] is None
            ):
                if not plain:
                    stored.extend(self._insert(conn, row, deps) for row, deps in run)
                    continue
                jobs = [Job.from_row(row) for row in queries.insert_jobs(conn, [row for row, _deps in run])]
                queued = [("JOB_QUEUED", ev.JobQueued(**self._ids(job), priority=job.priority)) for job in jobs]
                self.bus.publish_many(queued)
                stored.extend(jobs)
        return stored

    def _refuse_at_stop(self, job_type: str) -> None:
        if self.backpressure.check(job_type) >= BackpressureLevel.STOP:
            raise BackpressureRefused(
                f"queue {job_type!r} is at backpressure STOP (its queued depth is past queue.hard_limit): "
                "not enqueued; retry later or raise queue.hard_limit"
            )

    def _insert(self, conn: Any, row: dict[str, Any], deps: list[int]) -> Job:
        # Flagging the dependencies first locks them, so none completes unseen while this job is counted.
        statuses = queries.mark_dependents(conn, deps)
        missing = [dep for dep in deps if dep not in statuses]
        if missing:
            raise QueueError(f"depends_on names jobs that do not exist: {', '.join(map(str, missing))}")
        row["waiting_on"] = sum(1 for status in statuses.values() if status != JobStatus.COMPLETED.value)
        stored, inserted = queries.insert_job(conn, row, deps)
        job = Job.from_row(stored)
        if inserted:
            self.bus.publish("JOB_QUEUED", ev.JobQueued(**self._ids(job), priority=job.priority))
            hopeless = [(dep, status) for dep, status in sorted(statuses.items()) if status in _NEVER_COMPLETE]
            if hopeless:
                dep, status = hopeless[0]
                job = self._fail_waiting(conn, job, f"depends on job {dep} which is {status}")
        return job

    def _fail_waiting(self, conn: Any, job: Job, reason: str) -> Job:
        """Make queued `job` dead for `reason`, and every queued job that waits on it, transitively."""
        now = self.clock()
        first: Job | None = None
        pending = [(job, reason)]
        while pending:
            current, why = pending.pop(0)
            transition(current.status, JobStatus.DEAD, current.id)
            row = queries.set_status(conn, current.id, status=JobStatus.DEAD.value, now=now, error=why, finished_at=now)
            self.bus.publish("JOB_DEAD", ev.JobDead(**self._ids(current), error=why))
            first = first or Job.from_row(row)
            pending.extend(self._waiting_on(conn, current.id, JobStatus.DEAD))
        assert first is not None
        return first

    def _waiting_on(self, conn: Any, job_id: int, status: JobStatus) -> list[tuple[Job, str]]:
        """The queued jobs waiting on `job_id` (now `status`), each with the reason it can never run."""
        return [
            (Job.from_row(row), f"depends on job {job_id} which is {status.value}")
            for row in queries.queued_dependents(conn, job_id)
        ]

    def _fail_dependents(self, conn: Any, job_id: int, status: JobStatus) -> None:
        for dependent, why in self._waiting_on(conn, job_id, status):
            self._fail_waiting(conn, dependent, why)

    def _validated(
        self,
        job_type: str,
        config_key: str,
        payload: Mapping[str, Any] | None,
        priority: int,
        requires: Requirements | Mapping[str, Any] | None,
        target_node: str | None,
        depends_on: Iterable[int],
        idempotency_key: str | None,
        max_attempts: int | None,
        timeout_s: float | None,
    ) -> tuple[dict[str, Any], list[int]]:
        if not isinstance(job_type, str) or not NAME_PATTERN.match(job_type):
            raise QueueError(
                f"job type {job_type!r} is invalid: use 1-80 of a-z 0-9 _ . - starting with a letter/digit"
            )
        if not isinstance(config_key, str) or not 0 < len(config_key) <= 200:
            raise QueueError(f"config_key {config_key!r} is invalid: give a non-empty string of at most 200 characters")
        check_text(config_key, "config_key", QueueError)
        if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > _PRIORITY_RANGE:
            raise QueueError(f"priority {priority!r} is invalid: give an integer between ±{_PRIORITY_RANGE}")
        try:
            body = dict(payload or {})
        except (TypeError, ValueError) as exc:
            raise QueueError(f"payload is not a JSON object: {exc}") from None
        if TRACE_KEY in body:
            raise QueueError(f"the payload key {TRACE_KEY!r} is reserved for the trace context: rename it")
        context = tracing.traceparent()
        if context is not None:
            body[TRACE_KEY] = context  # the job continues the trace it was enqueued in, wherever it runs
        check_json(body, f"the payload of a {job_type} job", self.settings.max_payload_bytes, QueueError)
        try:
            needs = requires if isinstance(requires, Requirements) else Requirements.model_validate(requires or {})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise QueueError(f"requires is invalid: {problems}") from None
        if target_node is not None and (not isinstance(target_node, str) or not 0 < len(target_node) <= 200):
            raise QueueError(f"target_node {target_node!r} is invalid: give a node id of 1-200 characters")
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 300
        ):
            raise QueueError("idempotency_key must be a string of 1-300 characters")
        check_text(target_node, "target_node", QueueError)
        check_text(idempotency_key, "idempotency_key", QueueError)
        for label in needs.labels:
            check_text(label, "a required label", QueueError)
        attempts = self.settings.default_max_attempts if max_attempts is None else max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise QueueError(f"max_attempts {max_attempts!r} is invalid: give an integer of at least 1")
        timeout = self.settings.default_timeout_s if timeout_s is None else timeout_s
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            raise QueueError(f"timeout_s {timeout_s!r} is invalid: give a positive number of seconds")
        try:
            given = list(depends_on)
        except TypeError:
            raise QueueError(f"depends_on must be a list of job ids, got {depends_on!r}") from None
        if any(isinstance(dep, bool) or not isinstance(dep, int) for dep in given):
            raise QueueError(f"depends_on must be job ids (integers), got {given!r}")
        deps = sorted(set(given))
        now = self.clock()
        row = {
            "type": job_type,
            "config_key": config_key,
            "payload": body,
            "priority": priority,
            **needs.stored(),
            "target_node": target_node,
            "idempotency_key": idempotency_key,
            "status": JobStatus.QUEUED.value,
            "attempts": 0,
            "max_attempts": attempts,
            "timeout_s": float(timeout),
            "run_after": now,
            "lease_token": 0,
            "waiting_on": 0,
            "has_dependents": False,
            "created_at": now,
            "updated_at": now,
        }
        return row, deps

    def check_backpressure(self, queue_type: str) -> BackpressureLevel:
        """The backpressure level of `queue_type` now (publishes BACKPRESSURE_CHANGED when it changed)."""
        return self.backpressure.check(queue_type)

    # --- workers --------------------------------------------------------------------------

    def claim(
        self,
        node: str,
        capabilities: Capabilities | None = None,
        types: Sequence[str] | None = None,
        *,
        registered: bool = False,
    ) -> Lease | None:
        """Lease the next job `node` may run (of `types`, or any type), or None when there is none.

        `registered`: only a node registered and active may claim (the server asks this of its workers).
        """
        leases = self.claim_many(node, capabilities, types, limit=1, registered=registered)
        return leases[0] if leases else None

    def claim_many(
        self,
        node: str,
        capabilities: Capabilities | None = None,
        types: Sequence[str] | None = None,
        *,
        limit: int,
        registered: bool = False,
    ) -> list[Lease]:
        """Lease up to `limit` jobs `node` may run, in one statement and one transaction; [] when there are none.

        Each job fits `capabilities` by itself: a node offering its free resources to several
        jobs at once offers what each may take.
        """
        with self.store.transaction() as conn:
            rows = self._claim(conn, node, capabilities or Capabilities(), types, limit, registered)
        return [self._lease(row) for row in rows]

    def heartbeat(self, job_id: int, token: int) -> float:
        """Extend the lease held under `token`; return its new expiry (epoch seconds); StaleLeaseError if stale."""
        with self.store.transaction() as conn:
            now = self.clock()
            expires = queries.extend_lease(conn, job_id, token, now=now, lease_s=self.settings.lease_s)
            if expires is None:
                raise self._stale(conn, job_id, token, "heartbeat", now=now)
        return expires

    def complete(
        self,
        job_id: int,
        token: int,
        result: Any = None,
        *,
        event: Outcome | None = None,
        acting: str | None = None,
        check: CompletionCheck | None = None,
    ) -> Job:
        """Record the result of the attempt held under `token`; StaleLeaseError if that lease is no longer current.

        `event` (type, payload, dedup key) is the job's own outcome event, published in the
        same transaction: the result and its announcement commit together or not at all.
        `acting`: the node that reports; Forbidden (nothing changes) when another node holds the lease.
        `check(conn, row, event)` may refuse the result (raising) inside the transaction, rolling it back.
        """
        with self.store.transaction() as conn:
            row = self._complete(conn, job_id, token, result, event, acting, check)
        return Job.from_row(row)

    def complete_and_claim(
        self,
        job_id: int,
        token: int,
        result: Any = None,
        *,
        node: str,
        capabilities: Capabilities | None = None,
        types: Sequence[str] | None = None,
        event: Outcome | None = None,
        acting: str | None = None,
    ) -> tuple[Job, Lease | None]:
        """Complete the attempt held under `token` and lease `node`'s next job, in one transaction (one commit).

        For a worker that runs jobs back to back: the same as `complete` then `claim`, at
        half the commits. A stale token refuses both (StaleLeaseError), claiming nothing.
        `event` is published with the result, and `acting` checked, as in `complete`.
        """
        done, leases = self.complete_and_claim_many(
            job_id, token, result, node=node, capabilities=capabilities, types=types, event=event, acting=acting,
            limit=1,
        )  # fmt: skip
        return done, leases[0] if leases else None

    def complete_and_claim_many(
        self,
        job_id: int,
        token: int,
        result: Any = None,
        *,
        node: str,
        capabilities: Capabilities | None = None,
        types: Sequence[str] | None = None,
        event: Outcome | None = None,
        acting: str | None = None,
        limit: int,
        registered: bool = False,
        check: CompletionCheck | None = None,
    ) -> tuple[Job, list[Lease]]:
        """Complete the attempt held under `token` and lease up to `limit` more jobs to `node`, in one transaction.

        As `complete_and_claim`, with `claim_many`'s batch and `registered`, and `complete`'s `check`.
        """
        with self.store.transaction() as conn:
            done = self._complete(conn, job_id, token, result, event, acting, check)
            rows = self._claim(conn, node, capabilities or Capabilities(), types, limit, registered)
        return Job.from_row(done), [self._lease(row) for row in rows]

    def complete_many(self, completions: Sequence[Completion], *, acting: str | None = None) -> list[Job | QueueError]:
        """Complete several attempts in one transaction (one commit): each its Job, or the QueueError that refused it.

        A stale or unknown lease refuses only its own completion (nothing of it is written);
        the others commit. `acting` is checked as in `complete`: Forbidden refuses them all.
        """
        outcomes: list[Job | QueueError] = []
        with self.store.transaction() as conn:
            deferred: list[tuple[str, Any, str | None]] = []  # the untraced jobs' events, in one insert at the end
            for done in completions:
                try:
                    row = self._complete(conn, done.job_id, done.token, done.result, done.event, acting, defer=deferred)
                except QueueError as exc:  # stale, no such job, or a result the store cannot keep: nothing written
                    outcomes.append(exc)
                    continue
                outcomes.append(Job.from_row(row))
            if deferred:
                self.bus.publish_many(deferred)
        return outcomes

    def _claim(
        self, conn: Any, node: str, caps: Capabilities, types: Sequence[str] | None, limit: int, registered: bool
    ) -> list[Mapping[str, Any]]:
        if types is not None and not types:
            return []  # asked for no type at all
        if limit < 1:
            raise QueueError(f"a claim asks for at least one job, not {limit}")
        now = self.clock()
        rows = queries.claim_jobs(
            conn,
            limit=limit,
            node=node,
            now=now,
            lease_s=self.settings.lease_s,
            types=types,
            gpus=caps.gpus,
            memory_bytes=caps.memory_bytes,
            labels=sorted(caps.labels),
            limits=self.settings.concurrency_per_config,
            recovery_s=self.breaker_recovery_s,
            registered=registered,
        )
        claimed = [
            (ev.JobClaimed(**self._ids(row), node=node, token=row["lease_token"], attempt=row["attempts"]), row)
            for row in rows
        ]
        if any(_trace_of(row) for row in rows):
            for event, row in claimed:
                self.bus.publish("JOB_CLAIMED", event, traceparent=_trace_of(row))
        elif claimed:  # no job of the batch was traced: one insert for all their events
            self.bus.publish_many([("JOB_CLAIMED", event) for event, _row in claimed])
        return rows

    def _complete(
        self,
        conn: Any,
        job_id: int,
        token: int,
        result: Any,
        event: Outcome | None,
        acting: str | None = None,
        check: CompletionCheck | None = None,
        defer: list[tuple[str, Any, str | None]] | None = None,
    ) -> Mapping[str, Any]:
        """Complete one attempt inside `conn`'s transaction; with `defer`, an untraced job's events are appended to
        it for the caller to publish in one insert (before its transaction commits), instead of one by one."""
        check_json(result, f"the result of job {job_id}", self.settings.max_payload_bytes, QueueError)
        now = self.clock()
        row = queries.finish_job(
            conn, job_id, token, status=JobStatus.COMPLETED.value, now=now, result=result, live=True
        )
        if row is None:
            raise self._stale(conn, job_id, token, "complete", now=now)
        if acting is not None and row["lease_node"] != acting:  # rolls the whole transaction back
            raise Forbidden(f"job {job_id} is leased to node {row['lease_node']!r}, not {acting!r}")
        if check is not None:
            check(conn, row, event)
        # In the job's trace even when the worker's own span did not reach here (a worker behind the server).
        trace = _trace_of(row)
        if row["has_dependents"]:
            queries.release_dependents(conn, job_id)
        completed = ev.JobCompleted(**self._ids(row), node=row["lease_node"] or "")
        if defer is not None and trace is None:
            if event is not None:
                defer.append((event[0], dict(event[1]), event[2]))
            defer.append(("JOB_COMPLETED", completed, None))
            return row
        if event is not None:
            self.bus.publish(event[0], dict(event[1]), dedup_key=event[2], traceparent=trace)
        self.bus.publish("JOB_COMPLETED", completed, traceparent=trace)
        return row

    @staticmethod
    def _lease(row: Mapping[str, Any]) -> Lease:
        job = Job.from_row(row)
        assert job.lease_expires_at is not None
        return Lease(job=job, token=job.lease_token, expires_at=job.lease_expires_at)

    def fail(self, job_id: int, token: int, error: str, *, retryable: bool = True) -> Job:
        """Record a failed attempt: re-queue it after a backoff, or dead when not retryable or out of attempts.

        The error text is kept as given, except that NUL characters are shown as `\\x00` and
        it is cut to its last 4000 characters (a failure's reason usually ends a command's output).
        """
        error = _storable(str(error))
        with self.store.transaction() as conn:
            current = queries.get_job(conn, job_id, lock=True)
            if current is None or current["lease_token"] != token or current["status"] != JobStatus.RUNNING.value:
                raise self._stale(conn, job_id, token, "fail")
            job = self._release(conn, Job.from_row(current), error=error, retryable=retryable, expired=False)
        return job

    def release(self, job_id: int, token: int, reason: str) -> Job:
        """Give back the attempt held under `token` unfinished (a draining worker): queued again at once, uncounted.

        StaleLeaseError when that lease is no longer current; nothing changes then.
        """
        with self.store.transaction() as conn:
            row = queries.release_job(conn, job_id, token, now=self.clock(), reason=reason)
            if row is None:
                raise self._stale(conn, job_id, token, "release")
            transition(JobStatus.RUNNING, JobStatus.QUEUED, job_id)
            self.bus.publish(
                "JOB_QUEUED", ev.JobQueued(**self._ids(row), priority=row["priority"]), traceparent=_trace_of(row)
            )
        return Job.from_row(row)

    # --- the reaper and the cluster -------------------------------------------------------

    def reap(self, now: float | None = None) -> list[Job]:
        """Release every job whose lease expired before `now` (default: the clock); return them as they are now."""
        moment = self.clock() if now is None else now
        with self.store.transaction() as conn:
            rows = queries.expired_jobs(conn, now=moment, limit=_REAP_BATCH)
            return [
                self._release(conn, Job.from_row(row), error="lease expired", expired=True, now=moment) for row in rows
            ]

    def requeue_node(self, node_id: str) -> list[Job]:
        """Release every lease held by `node_id` (declared lost); each attempt counts as expired."""
        with self.store.transaction() as conn:
            rows = queries.node_jobs(conn, node_id)
            return [self._release(conn, Job.from_row(row), error=f"node {node_id} lost", expired=True) for row in rows]

    def _release(
        self, conn: Any, job: Job, *, error: str, retryable: bool = True, expired: bool, now: float | None = None
    ) -> Job:
        """End a running attempt that did not complete: back to queued after a backoff, or dead."""
        now = self.clock() if now is None else now
        node = job.lease_node or ""
        again = retryable and job.attempts < job.max_attempts
        transition(job.status, JobStatus.QUEUED if again else JobStatus.DEAD, job.id)
        trace = job.traceparent
        if expired:
            self.bus.publish("JOB_LEASE_EXPIRED", ev.JobLeaseExpired(**self._ids(job), node=node), traceparent=trace)
        else:
            failed = ev.JobFailed(**self._ids(job), node=node, error=error, retryable=retryable)
            self.bus.publish("JOB_FAILED", failed, traceparent=trace)
        if again:
            row = queries.requeue_job(
                conn, job.id, job.lease_token, now=now, run_after=now + self.backoff_s(job.attempts), error=error
            )
        else:
            row = queries.finish_job(conn, job.id, job.lease_token, status=JobStatus.DEAD.value, now=now, error=error)
            self.bus.publish("JOB_DEAD", ev.JobDead(**self._ids(job), error=error), traceparent=trace)
            if job.has_dependents:
                self._fail_dependents(conn, job.id, JobStatus.DEAD)
        assert row is not None  # the row is locked by this transaction and was running under this token
        return Job.from_row(row)

    def backoff_s(self, attempts: int) -> float:
        """Delay after `attempts` attempts before the next (seconds): doubling from retry_initial_s to retry_max_s."""
        return float(min(self.settings.retry_max_s, self.settings.retry_initial_s * 2 ** max(0, attempts - 1)))

    # --- operators ------------------------------------------------------------------------

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job (a running holder's token stops being accepted)."""
        with self.store.transaction() as conn:
            job = self._get(conn, job_id, lock=True)
            transition(job.status, JobStatus.CANCELLED, job_id)
            now = self.clock()
            row = queries.set_status(
                conn, job_id, status=JobStatus.CANCELLED.value, now=now, lease_expires_at=None, finished_at=now
            )
            self.bus.publish("JOB_CANCELLED", ev.JobCancelled(**self._ids(job)))
            if job.has_dependents:
                self._fail_dependents(conn, job_id, JobStatus.CANCELLED)
        return Job.from_row(row)

    def retry(self, job_id: int) -> Job:
        """Put a dead or cancelled job back in the queue with a fresh set of attempts."""
        with self.store.transaction() as conn:
            job = self._get(conn, job_id, lock=True)
            # running -> queued is the failure edge, not an operator's move.
            if job.status not in (JobStatus.DEAD, JobStatus.CANCELLED):
                raise QueueError(f"job {job_id} is {job.status.value}: only dead or cancelled jobs can be retried")
            blocked = queries.unfinishable_dependencies(conn, job_id)
            if blocked:
                dep, status = blocked[0]
                raise QueueError(f"job {job_id} depends on job {dep} which is {status}: retry job {dep} first")
            transition(job.status, JobStatus.QUEUED, job_id)
            now = self.clock()
            row = queries.set_status(
                conn, job_id, status=JobStatus.QUEUED.value, now=now, attempts=0, run_after=now, finished_at=None,
                lease_expires_at=None,
            )  # fmt: skip
            self.bus.publish("JOB_QUEUED", ev.JobQueued(**self._ids(job), priority=job.priority))
        return Job.from_row(row)

    def get(self, job_id: int) -> Job:
        """One job by id; QueueError if there is none."""
        with self.store.read() as conn:
            return self._get(conn, job_id)

    def dependencies(self, job_id: int) -> list[int]:
        """The ids of the jobs `job_id` waits for."""
        with self.store.read() as conn:
            return queries.dependencies_of(conn, job_id)

    def list(
        self,
        *,
        statuses: Sequence[JobStatus] | None = None,
        job_type: str | None = None,
        config_key: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs matching the filters, newest first, at most `limit`."""
        with self.store.read() as conn:
            rows = queries.list_jobs(
                conn, statuses=[s.value for s in statuses or ()], job_type=job_type, config_key=config_key, limit=limit
            )
        return [Job.from_row(row) for row in rows]

    def stats(self) -> dict[str, dict[str, int]]:
        """Job counts by type, then by status."""
        with self.store.read() as conn:
            counts = queries.job_counts(conn)
        table: dict[str, dict[str, int]] = {}
        for job_type, status, count in counts:
            table.setdefault(job_type, {})[status] = count
        return table

    # --- helpers --------------------------------------------------------------------------

    @staticmethod
    def _ids(job: Job | Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(job, Job):
            return {"config_key": job.config_key, "job_id": job.id, "job_type": job.type}
        return {"config_key": job["config_key"], "job_id": job["id"], "job_type": job["type"]}

    @staticmethod
    def _get(conn: Any, job_id: int, *, lock: bool = False) -> Job:
        row = queries.get_job(conn, job_id, lock=lock)
        if row is None:
            raise QueueError(f"no job {job_id}: list jobs with `zeroloop queue ls`")
        return Job.from_row(row)

    @staticmethod
    def _stale(conn: Any, job_id: int, token: int, what: str, *, now: float | None = None) -> QueueError:
        row = queries.get_job(conn, job_id)
        if row is None:
            return QueueError(f"cannot {what} job {job_id}: there is no such job")
        if row["status"] != JobStatus.RUNNING.value:
            return StaleLeaseError(
                f"cannot {what} job {job_id} with token {token}: the job is {row['status']}, not running"
            )
        expires = row["lease_expires_at"]
        if row["lease_token"] == token and now is not None and expires is not None and expires < now:
            return StaleLeaseError(
                f"cannot {what} job {job_id} with token {token}: its lease expired {now - expires:.1f} s ago and "
                "the job will run again; drop this attempt's result (heartbeat well within queue.lease_s)"
            )
        return StaleLeaseError(
            f"cannot {what} job {job_id} with token {token}: it was re-leased (current token {row['lease_token']}); "
            "drop this attempt's result"
        )


_NEVER_COMPLETE = frozenset({JobStatus.DEAD.value, JobStatus.CANCELLED.value})

# Refuses a completion inside its transaction (raising): (connection, the completed row, its outcome event).
CompletionCheck = Callable[[Any, Mapping[str, Any], Outcome | None], None]


@dataclass(frozen=True)
class Completion:
    """One attempt to complete in `complete_many`: the job, its fencing token, its result and outcome event."""

    job_id: int
    token: int
    result: Any = None
    event: Outcome | None = None


def _trace_of(row: Mapping[str, Any]) -> str | None:
    """The trace context a job row keeps in its payload (None when it was enqueued outside any span)."""
    context = (row["payload"] or {}).get(TRACE_KEY)
    return context if isinstance(context, str) else None


def _storable(error: str) -> str:
    """An error text both backends keep: NULs made visible, at most its last _ERROR_MAX_CHARS characters."""
    text = error.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _ERROR_MAX_CHARS else "..." + text[-(_ERROR_MAX_CHARS - 3) :]
