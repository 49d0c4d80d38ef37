"""Every body, path, query and header is checked at the edge: a client's mistake is a 400 naming the field, never a 5xx,
never a store detail, and nothing is stored."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import sqlalchemy as sa

from tests.server.conftest import Served
from zeroloop.config import ServerSettings
from zeroloop.errors import StoreUnavailable
from zeroloop.pipeline import jobs
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteDaemonRecords
from zeroloop.remote.wire import API
from zeroloop.store.schema import daemons, events, nodes

W1 = f"{API}/w1"
INFO = {"id": "w1", "host": "h", "provider": "manual", "cpu_count": 4, "memory_bytes": 1, "disk_bytes": 1}
ROW = {"node": "w1", "name": "agent", "state": "running", "restarts": 0, "health": {}, "updated_at": 1.0}


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"x": value}
    return value


# (path under W1, body, the field the 400 must name)
BAD_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("/register", {"info": {**INFO, "host": "a\x00b"}}, "body.info.host"),
    ("/register", {"info": {**INFO, "cpu_count": "many"}}, "body.info.cpu_count"),
    ("/register", {"info": {**INFO, "slots": -3}}, "body.info.slots"),
    ("/register", {"info": {**INFO, "memory_bytes": 2**70}}, "body.info.memory_bytes"),
    ("/register", {"info": {**INFO, "host": "h" * 5000}}, "body.info.host"),
    ("/register", {"info": {**INFO, "labels": ["ok", 7]}}, "body.info.labels.1"),
    ("/register", {"info": {**INFO, "gpus": [{"name": "x\x00"}]}}, "body.info.gpus.0"),
    ("/heartbeat", {"utilisation": {"cpu_pct": "hot"}}, "body.utilisation.cpu_pct"),
    ("/heartbeat", {"utilisation": {"gpus": [{"index": 2**64}]}}, "body.utilisation.gpus.0.index"),
    ("/daemons", {"rows": [{**ROW, "name": "a\x00"}]}, "body.rows.0.name"),
    ("/daemons", {"rows": [{**ROW, "restarts": 2**64}]}, "body.rows.0.restarts"),
    ("/daemons", {"rows": [{**ROW, "health": _deep(40)}]}, "body.rows.0.health"),
    ("/daemons", {"rows": [{**ROW, "state": "bored"}]}, "body.rows.0.state"),
    ("/jobs/claim", {"types": ["selfplay\x00"]}, "body.types.0"),
    ("/jobs/claim", {"capabilities": {"gpus": 2**64}}, "body.capabilities.gpus"),
    ("/jobs/claim", {"capabilities": {"labels": ["l" * 300]}}, "body.capabilities.labels.0"),
    ("/jobs/claim", {"limit": 10_000}, "body.limit"),
    ("/jobs/1/heartbeat", {"token": 2**64}, "body.token"),
    ("/jobs/1/heartbeat", {"token": "one"}, "body.token"),
    ("/jobs/1/complete", {"token": 1, "result": {"n": 2**64}}, "body.result"),
    ("/jobs/1/complete", {"token": 1, "result": {"k\x00": 1}}, "body.result"),
    ("/jobs/1/release", {"token": 1, "reason": "r\x00"}, "body.reason"),
    ("/events", {"type": "TRAINING_PROGRESS", "payload": {"job_id": 2**80}}, "body.payload"),
    ("/events", {"type": "training progress", "payload": {}}, "body.type"),
    ("/events", {"type": "TRAINING_PROGRESS", "payload": {}, "dedup_key": "k\x00"}, "body.dedup_key"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_BODIES, ids=[f"{p}:{f}" for p, _b, f in BAD_BODIES])
def test_a_bad_body_is_a_400_naming_its_field_and_stores_nothing(
    served: Served, path: str, body: dict[str, Any], field: str
) -> None:
    before = _counts(served)
    answer = served.client.post(f"{W1}{path}", json=body, headers=Served.auth(served.worker))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "BadRequest" and field in answer.json()["detail"], answer.text
    assert _counts(served) == before


def test_bad_paths_queries_and_headers_are_400s(served: Served) -> None:
    w1 = Served.auth(served.worker)
    job = served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    lease = served.client.post(f"{W1}/jobs/claim", json={}, headers=w1).json()["lease"]
    assert lease["id"] == job.id
    data = b"games" * 10
    sha = hashlib.sha256(data).hexdigest()
    upload = f"{W1}/artifacts/{sha}"
    cases = [
        served.client.get(f"{W1}/models/a%00b/production", headers=w1),
        served.client.get(f"{W1}/models/{'k' * 300}/production", headers=w1),
        served.client.get(f"{W1}/artifacts/not-a-digest", headers=w1),
        served.client.get(f"{W1}/artifacts/{sha}", params={"stream": "yes"}, headers=w1),
        served.client.post(f"{W1}/jobs/99999999999999999999/heartbeat", json={"token": 1}, headers=w1),
        served.client.put(
            upload,
            params={"kind": "game_batch", "producer_job_id": job.id, "config_key": "a\x00"},
            content=data,
            headers=w1,
        ),
        served.client.put(upload, params={"kind": "game_batch", "producer_job_id": 2**64}, content=data, headers=w1),
        served.client.put(upload, params={"kind": "rubbish", "producer_job_id": job.id}, content=data, headers=w1),
        served.client.put(
            upload,
            params={"kind": "game_batch", "producer_job_id": job.id},
            content=data,
            headers={**w1, "X-Zeroloop-Meta": '{"x":' * 2000 + "1" + "}" * 2000},
        ),
        served.client.put(
            upload,
            params={"kind": "game_batch", "producer_job_id": job.id},
            content=data,
            headers={**w1, "X-Zeroloop-Meta": '{"n": 99999999999999999999999}'},
        ),
        served.client.put(
            upload,
            params={"kind": "game_batch", "producer_job_id": job.id},
            content=data,
            headers={**w1, "X-Zeroloop-Meta": "[1, 2]"},
        ),
    ]
    for answer in cases:
        assert answer.status_code == 400, (answer.request.url, answer.text)
        assert answer.json()["error"] == "BadRequest"
    with served.app.store.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM artifacts")).scalar_one() == 0


def test_bad_admin_paths_are_400s_not_store_errors(served: Served) -> None:
    admin = Served.auth(served.admin)
    cases = [
        served.client.get("/api/pipelines/a%00b", headers=admin),
        served.client.post("/api/pipelines/a%00b/pause", headers=admin),
        served.client.post("/api/jobs/99999999999999999999/retry", headers=admin),
        served.client.post("/api/dead-letters/0/retry", headers=admin),
        served.client.post(f"/api/models/{'m' * 300}/promote", headers=admin),
        served.client.get("/api/events", params={"type": "NOT A TYPE"}, headers=admin),
        served.client.get("/api/models", params={"config": "c\x00"}, headers=admin),
        served.client.post("/api/nodes/w1/quarantine", json={"reason": ""}, headers=admin),
    ]
    for answer in cases:
        assert answer.status_code == 400, (answer.request.url, answer.text)


def test_a_store_failure_is_a_503_that_names_no_database(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailable("cannot connect to postgresql://zeroloop@db.internal:5432/zeroloop: refused")

    monkeypatch.setattr("zeroloop.queue.manager.JobQueue.claim_many", unreachable)
    monkeypatch.setattr("zeroloop.control.views.queue", unreachable)
    worker = served.client.post(f"{W1}/jobs/claim", json={}, headers=Served.auth(served.worker))
    admin = served.client.get("/api/queue", headers=Served.auth(served.admin))
    for answer in (worker, admin):
        assert answer.status_code == 503 and answer.json()["error"] == "StoreUnavailable"
        assert "db.internal" not in answer.text and "5432" not in answer.text and "zeroloop@" not in answer.text


def _counts(served: Served) -> tuple[int, ...]:
    with served.app.store.read() as conn:
        return tuple(
            int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
            for table in (events, nodes, daemons)
        )


def test_a_worker_sends_its_daemons_errors_as_the_server_takes_them(served: Served) -> None:
    """An exception's text may hold NULs and run long: the worker's side shows and cuts it, so the record is kept."""
    client = ServerClient(ServerSettings(url=served.url, token=served.worker), "w1")
    try:
        row = {**ROW, "state": "failed", "last_error": "engine\x00crashed " + "x" * 6000}
        loop = {"node": "w1", "daemon": "agent", "restarts": 5, "last_error": "boom\x00"}
        RemoteDaemonRecords(client).write([row], [loop])
    finally:
        client.close()
    with served.app.store.read() as conn:
        kept = conn.execute(sa.select(daemons.c.last_error)).scalar_one()
    assert kept.startswith("...") and len(kept) == 4000 and "\x00" not in kept
