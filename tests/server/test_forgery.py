"""No forged results: an outcome only with its job's completion, from its lease holder, with the artifact it produced;
no claims before registering; no events in another node's name; and an admin's quarantine keeps a node's results out."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.server.conftest import Served, register_node
from zeroloop.config import ServerSettings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.events.bus import EventBus
from zeroloop.pipeline import jobs
from zeroloop.pipeline.coordinator import PipelineCoordinator
from zeroloop.queue.jobs import JobStatus
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteQueue
from zeroloop.remote.wire import API
from zeroloop.store.queries import quarantine as quarantine_queries
from zeroloop.store.schema import events, node_quarantines

W1 = f"{API}/w1"
KEY = "tic_tac_toe_2p"


def _types(served: Served) -> list[str]:
    with served.app.store.read() as conn:
        return [str(t) for t in conn.execute(sa.select(events.c.type).order_by(events.c.id)).scalars()]


def _claimed(served: Served, headers: dict[str, str], node: str = "w1") -> tuple[int, int]:
    job = served.app.queue.enqueue(jobs.SELFPLAY, KEY, {"games": 1})
    lease = served.client.post(f"{API}/{node}/jobs/claim", json={"types": ["selfplay"]}, headers=headers).json()
    assert lease["lease"]["id"] == job.id, lease
    return job.id, lease["lease"]["lease_token"]


def _upload(
    served: Served, headers: dict[str, str], job_id: int, data: bytes, kind: str = "game_batch"
) -> httpx.Response:
    sha = hashlib.sha256(data).hexdigest()
    params = {"kind": kind, "producer_job_id": job_id, "config_key": KEY}
    return served.client.put(f"{W1}/artifacts/{sha}", params=params, content=data, headers=headers)


def _selfplay_complete(job_id: int, sha: str, samples: int = 5000) -> dict[str, Any]:
    payload = {"config_key": KEY, "job_id": job_id, "artifact_sha256": sha, "games": 10, "samples": samples}
    return {"type": "SELFPLAY_COMPLETE", "payload": payload, "dedup_key": f"SELFPLAY_COMPLETE:{job_id}"}


def test_an_outcome_event_cannot_be_published_on_its_own(served: Served) -> None:
    """The issue's phantom: SELFPLAY_COMPLETE for a job that does not exist, naming an artifact that is not."""
    before = _types(served)
    answer = served.client.post(
        f"{W1}/events", json=_selfplay_complete(424242, "0" * 64), headers=Served.auth(served.worker)
    )
    assert answer.status_code == 403 and "only with its job's completion" in answer.json()["detail"]
    assert _types(served) == before


def test_a_completion_carries_only_its_own_job_and_the_artifact_it_produced(served: Served) -> None:
    w1 = Served.auth(served.worker)
    job_id, token = _claimed(served, w1)
    data = b"positions" * 100
    sha = hashlib.sha256(data).hexdigest()

    def complete(result: Any, event: dict[str, Any]) -> httpx.Response:
        return served.client.post(
            f"{W1}/jobs/{job_id}/complete", json={"token": token, "result": result, "event": event}, headers=w1
        )

    other = served.app.queue.enqueue(jobs.SELFPLAY, KEY, {"games": 1}).id
    before = _types(served)
    refusals = [
        (complete({"artifact_sha256": sha}, _selfplay_complete(job_id, sha)), 422, "not in the manifest"),
    ]
    assert _upload(served, w1, job_id, b"").status_code == 422  # an empty artifact is no output
    assert _upload(served, w1, job_id, data, kind="model").status_code == 422  # a selfplay job makes game batches
    assert _upload(served, w1, job_id, data).status_code == 200
    refusals += [
        (complete({"artifact_sha256": sha}, _selfplay_complete(other, sha)), 403, "not this job"),
        (complete({"artifact_sha256": sha}, _selfplay_complete(job_id, "1" * 64)), 403, "not its artifact"),
        (complete({"artifact_sha256": "1" * 64}, _selfplay_complete(job_id, "1" * 64)), 422, "not in the manifest"),
        (complete({}, _selfplay_complete(job_id, sha)), 422, "names no artifact_sha256"),
        (complete({"artifact_sha256": sha}, {**_selfplay_complete(job_id, sha), "type": "EVALUATION_RESULT"}), 403,
         "completes with SELFPLAY_COMPLETE"),
    ]  # fmt: skip
    for answer, status, reason in refusals:
        assert answer.status_code == status and reason in answer.json()["detail"], answer.text
    assert served.app.queue.get(job_id).status is JobStatus.RUNNING  # every refusal rolled back
    assert _types(served) == before
    done = complete({"artifact_sha256": sha}, _selfplay_complete(job_id, sha))
    assert done.status_code == 200, done.text
    assert _types(served)[-2:] == ["SELFPLAY_COMPLETE", "JOB_COMPLETED"]


def test_another_nodes_job_gets_neither_an_upload_nor_an_outcome(served: Served) -> None:
    w2 = Served.auth(Tokens(served.app.store).create(Role.WORKER, node="w2")[0])
    register_node(served.app, "w2")
    job_id, token = _claimed(served, w2, node="w2")
    w1 = Served.auth(served.worker)
    data = b"stolen" * 50
    upload = _upload(served, w1, job_id, data)
    assert upload.status_code == 403 and "does not hold job" in upload.json()["detail"]
    sha = hashlib.sha256(data).hexdigest()
    body = {"token": token, "result": {"artifact_sha256": sha}, "event": _selfplay_complete(job_id, sha)}
    stolen = served.client.post(f"{W1}/jobs/{job_id}/complete", json=body, headers=w1)
    assert stolen.status_code == 403 and "leased to node 'w2'" in stolen.json()["detail"]
    missing = _upload(served, w1, 987654, data)
    assert missing.status_code == 404


def test_an_unregistered_node_claims_nothing(served: Served) -> None:
    stranger = Tokens(served.app.store).create(Role.WORKER, node="w9")[0]
    job = served.app.queue.enqueue(jobs.SELFPLAY, KEY, {"games": 1})
    answer = served.client.post(f"{API}/w9/jobs/claim", json={"limit": 5}, headers=Served.auth(stranger))
    assert answer.status_code == 200 and answer.json() == {"lease": None, "leases": []}
    assert served.app.queue.get(job.id).status is JobStatus.QUEUED
    register_node(served.app, "w9")  # once its agent has registered it, it may
    answer = served.client.post(f"{API}/w9/jobs/claim", json={}, headers=Served.auth(stranger))
    assert answer.json()["lease"]["id"] == job.id


def test_events_name_only_the_publishing_node(served: Served) -> None:
    w1 = Served.auth(served.worker)
    loop = {"node": "w2", "daemon": "agent", "restarts": 5, "last_error": "boom"}
    other_job = served.app.queue.enqueue(jobs.TRAIN, KEY, {"iteration": 0, "window_sha256": "0" * 64}).id
    before = _types(served)
    published = served.client.post(f"{W1}/events", json={"type": "DAEMON_CRASH_LOOP", "payload": loop}, headers=w1)
    assert published.status_code == 403 and "not of node 'w2'" in published.json()["detail"]
    written = served.client.post(f"{W1}/daemons", json={"rows": [], "crash_loops": [loop]}, headers=w1)
    assert written.status_code == 403 and "own daemons' crash loops" in written.json()["detail"]
    progress = {"config_key": KEY, "job_id": other_job, "step": 1, "loss": 1.0, "samples_per_s": 1.0}
    refused = served.client.post(f"{W1}/events", json={"type": "TRAINING_PROGRESS", "payload": progress}, headers=w1)
    assert refused.status_code == 403 and "does not hold" in refused.json()["detail"]
    assert _types(served) == before
    own = {**loop, "node": "w1"}
    assert served.client.post(f"{W1}/events", json={"type": "DAEMON_CRASH_LOOP", "payload": own}, headers=w1).is_success
    with served.app.store.read() as conn:
        assert conn.execute(sa.select(events.c.node).order_by(events.c.id.desc())).scalars().first() == "w1"


def test_a_quarantined_nodes_batches_stay_out_of_the_training_window(served: Served) -> None:
    w1 = Served.auth(served.worker)
    shas = []
    for n in range(2):
        job_id, token = _claimed(served, w1)
        data = f"batch {n}".encode() * 100
        assert _upload(served, w1, job_id, data).status_code == 200
        sha = hashlib.sha256(data).hexdigest()
        # Completed with its batch, so the batch is an accepted output that a window may take.
        body = {"token": token, "result": {"artifact_sha256": sha}, "event": _selfplay_complete(job_id, sha)}
        assert served.client.post(f"{W1}/jobs/{job_id}/complete", json=body, headers=w1).is_success
        shas.append(sha)
    app = served.app
    bus = EventBus(app.store, node="coordinator", source="test")
    coordinator = PipelineCoordinator(app.store, bus, app.queue, app.models, app.settings)
    with app.store.read() as conn:
        assert sorted(coordinator._window_inputs(conn, KEY, 10**9, set())) == sorted(shas)
    viewer = served.client.post("/api/nodes/w1/quarantine", json={"reason": "x"}, headers=Served.auth(served.viewer))
    assert viewer.status_code == 403
    admin = Served.auth(served.admin)
    made = served.client.post("/api/nodes/w1/quarantine", json={"reason": "forged batches"}, headers=admin)
    assert made.status_code == 200 and "quarantined" in made.json()["message"]
    with app.store.read() as conn:
        assert coordinator._window_inputs(conn, KEY, 10**9, set()) == []
        assert quarantine_queries.quarantined_artifacts(conn, shas) == set(shas)
        decided = conn.execute(sa.select(node_quarantines)).mappings().one()
    assert decided["reason"] == "forged batches" and decided["actor"].startswith("token:")
    assert served.client.post("/api/nodes/w1/unquarantine", headers=admin).status_code == 200
    with app.store.read() as conn:
        assert sorted(coordinator._window_inputs(conn, KEY, 10**9, set())) == sorted(shas)


@pytest.mark.parametrize("limit", [1, 3])
def test_a_batch_claim_through_the_server_leases_each_job_once(served: Served, limit: int) -> None:
    w1 = Served.auth(served.worker)
    ids = [served.app.queue.enqueue(jobs.SELFPLAY, KEY, {"games": 1}).id for _ in range(4)]
    first = served.client.post(f"{W1}/jobs/claim", json={"limit": limit}, headers=w1).json()
    assert [row["id"] for row in first["leases"]] == ids[:limit] and first["lease"]["id"] == ids[0]
    rest = served.client.post(f"{W1}/jobs/claim", json={"limit": 10}, headers=w1).json()["leases"]
    assert [row["id"] for row in rest] == ids[limit:]


def test_the_worker_library_claims_a_batch_in_one_request(served: Served) -> None:
    ids = [served.app.queue.enqueue(jobs.SELFPLAY, KEY, {"games": 1}).id for _ in range(5)]
    client = ServerClient(ServerSettings(url=served.url, token=served.worker), "w1")
    try:
        leases = RemoteQueue(client).claim_many("w1", types=["selfplay"], limit=3)
    finally:
        client.close()
    assert [lease.job.id for lease in leases] == ids[:3] and all(lease.job.lease_node == "w1" for lease in leases)
