"""The worker API refuses what it must with a clear 4xx and changes nothing: tokens, bad input, stale leases."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import make_app
from tests.server.conftest import Served, register_node, running_server
from zeroloop.artifacts.cache import LocalCache
from zeroloop.artifacts.repository import Artifacts
from zeroloop.artifacts.transfer import ArtifactKind
from zeroloop.config import ServerSettings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.errors import AuthError, ConfigError
from zeroloop.pipeline import jobs
from zeroloop.queue.jobs import JobStatus
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteArtifacts
from zeroloop.remote.wire import API, TooLarge
from zeroloop.server.serve import check_bind, is_loopback
from zeroloop.server.worker import TRANSFER_THREADS
from zeroloop.store.schema import artifacts, events, nodes

W1 = f"{API}/w1"


def _event_count(served: Served) -> int:
    with served.app.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(events)).scalar_one())


def _held_job(served: Served) -> tuple[int, int]:
    """A selfplay job leased to w1 through the API: (job id, fencing token)."""
    job = served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    body = {"types": ["selfplay"]}
    lease = served.client.post(f"{W1}/jobs/claim", json=body, headers=Served.auth(served.worker)).json()["lease"]
    assert lease["id"] == job.id
    return job.id, lease["lease_token"]


def test_health_and_readiness(served: Served) -> None:
    assert served.client.get("/healthz").json() == {"status": "ok"}
    ready = served.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_bad_tokens_get_401_or_403_and_change_nothing(served: Served) -> None:
    job = served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    expired, _ = Tokens(served.app.store, clock=lambda: time.time() - 100).create(Role.WORKER, node="w1", expires_s=10)
    revoked, row = Tokens(served.app.store).create(Role.WORKER, node="w1")
    Tokens(served.app.store).revoke(row["id"])
    before = _event_count(served)
    cases = {
        None: (401, "no token"),
        "zl_0123456789ab_" + "x" * 43: (401, "not valid"),
        served.worker[:-4] + "AAAA": (401, "not valid"),
        expired: (401, "expired"),
        revoked: (401, "revoked"),
        served.viewer: (403, "viewer token"),
    }
    for token, (status, reason) in cases.items():
        headers = Served.auth(token) if token else {}
        answer = served.client.post(f"{W1}/jobs/claim", json={}, headers=headers)
        assert answer.status_code == status, (token, answer.text)
        assert reason in answer.json()["detail"]
        assert token is None or token.split("_", 2)[2] not in answer.text
    other = served.client.post(f"{API}/w2/jobs/claim", json={}, headers=Served.auth(served.worker))
    assert other.status_code == 403 and "not as 'w2'" in other.json()["detail"]
    assert served.app.queue.get(job.id).status is JobStatus.QUEUED
    assert _event_count(served) == before


def test_a_worker_cannot_register_publish_or_complete_as_another_node(served: Served) -> None:
    w1 = Served.auth(served.worker)
    info = {"id": "w2", "host": "h", "provider": "manual", "cpu_count": 1, "memory_bytes": 1, "disk_bytes": 1}
    answer = served.client.post(f"{W1}/register", json={"info": info}, headers=w1)
    assert answer.status_code == 403 and "cannot register as 'w2'" in answer.json()["detail"]
    served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    w2 = Tokens(served.app.store).create(Role.WORKER, node="w2")[0]
    register_node(served.app, "w2")
    lease = served.client.post(f"{API}/w2/jobs/claim", json={}, headers=Served.auth(w2)).json()["lease"]
    stolen = served.client.post(f"{W1}/jobs/{lease['id']}/complete", json={"token": lease["lease_token"]}, headers=w1)
    assert stolen.status_code == 403 and "leased to node 'w2'" in stolen.json()["detail"]
    assert served.app.queue.get(lease["id"]).status is JobStatus.RUNNING
    refused = served.client.post(f"{W1}/events", json={"type": "MODEL_PROMOTED", "payload": {}}, headers=w1)
    assert refused.status_code == 403 and "workers publish only" in refused.json()["detail"]
    with served.app.store.read() as conn:
        assert conn.execute(sa.select(nodes.c.host).where(nodes.c.id == "w2")).scalar_one() == "test"


def test_bad_input_gets_a_clear_4xx_and_stores_nothing(served: Served) -> None:
    w1 = Served.auth(served.worker)
    before = _event_count(served)
    malformed = served.client.post(
        f"{W1}/jobs/claim", content=b"{not json", headers={**w1, "content-type": "application/json"}
    )
    assert malformed.status_code == 400 and "invalid request" in malformed.json()["detail"]
    wrong_shape = served.client.post(f"{W1}/jobs/claim", json={"types": 3, "extra": 1}, headers=w1)
    assert wrong_shape.status_code == 400
    huge = served.client.post(f"{W1}/heartbeat", json={"utilisation": {"x": "y" * 5_000_000}}, headers=w1)
    assert huge.status_code == 413 and "max_body_bytes" in huge.json()["detail"]
    unknown = served.client.post(f"{W1}/jobs/999999/complete", json={"token": 1}, headers=w1)
    assert unknown.status_code == 404 and "no job 999999" in unknown.json()["detail"]
    assert _event_count(served) == before


def test_a_stale_fencing_token_is_refused_with_409(served: Served) -> None:
    w1 = Served.auth(served.worker)
    job = served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    lease = served.client.post(f"{W1}/jobs/claim", json={"types": ["selfplay"]}, headers=w1).json()["lease"]
    assert lease["id"] == job.id
    token = lease["lease_token"]
    beat = served.client.post(f"{W1}/jobs/{job.id}/heartbeat", json={"token": token}, headers=w1)
    assert beat.status_code == 200 and beat.json()["expires_at"] > time.time()
    data = b"games" * 100
    sha = hashlib.sha256(data).hexdigest()
    params = {"kind": "game_batch", "producer_job_id": job.id}
    assert served.client.put(f"{W1}/artifacts/{sha}", params=params, content=data, headers=w1).status_code == 200
    before = _event_count(served)
    event = {"type": "SELFPLAY_COMPLETE", "payload": {"config_key": "tic_tac_toe_2p", "job_id": job.id,
             "artifact_sha256": sha, "games": 1, "samples": 1}, "dedup_key": f"x:{job.id}"}  # fmt: skip
    result = {"artifact_sha256": sha}
    stale = served.client.post(
        f"{W1}/jobs/{job.id}/complete", json={"token": token - 1, "result": result, "event": event}, headers=w1
    )
    assert stale.status_code == 409 and "re-leased" in stale.json()["detail"]
    assert stale.json()["error"] == "StaleLeaseError"
    assert _event_count(served) == before  # the outcome event was not published with the refused result
    done = served.client.post(
        f"{W1}/jobs/{job.id}/complete", json={"token": token, "result": result, "event": event}, headers=w1
    )
    assert done.status_code == 200 and done.json()["job"]["status"] == "completed"
    again = served.client.post(f"{W1}/jobs/{job.id}/fail", json={"token": token, "error": "late"}, headers=w1)
    assert again.status_code == 409 and "completed, not running" in again.json()["detail"]


def test_an_artifact_whose_bytes_miss_their_digest_is_refused_and_nothing_stored(
    served: Served, tmp_path: Path
) -> None:
    w1 = Served.auth(served.worker)
    job_id, _token = _held_job(served)
    data = b"game records" * 1000
    sha = hashlib.sha256(data).hexdigest()
    wrong = hashlib.sha256(b"other").hexdigest()
    params = {"kind": "game_batch", "producer_job_id": job_id}
    refused = served.client.put(f"{W1}/artifacts/{wrong}", params=params, content=data, headers=w1)
    assert refused.status_code == 422 and "nothing stored" in refused.json()["detail"]
    bad_meta = served.client.put(
        f"{W1}/artifacts/{sha}", params=params, content=data, headers={**w1, "X-Zeroloop-Meta": "{"}
    )
    assert bad_meta.status_code == 400
    with served.app.store.read() as conn:
        assert conn.execute(sa.select(artifacts.c.sha256)).scalars().all() == []
    stored_files = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "cache" not in p.parts]
    assert [p for p in stored_files if p.suffix != ".db" and "zeroloop.db" not in p.name] == []
    missing = served.client.get(f"{W1}/artifacts/{sha}", headers=w1)
    assert missing.status_code == 404
    ok = served.client.put(
        f"{W1}/artifacts/{sha}", params={**params, "config_key": "tic_tac_toe_2p"}, content=data,
        headers={**w1, "X-Zeroloop-Meta": '{"samples": 3}'},
    )  # fmt: skip
    assert ok.status_code == 200 and ok.json()["size_bytes"] == len(data)
    fetched = served.client.get(f"{W1}/artifacts/{sha}", headers=w1)
    assert fetched.content == data and fetched.headers["X-Zeroloop-SHA256"] == sha


def test_settings_for_a_worker_carry_no_url_and_no_secret(served: Served) -> None:
    answer = served.client.get(f"{W1}/settings", headers=Served.auth(served.worker)).json()
    assert set(answer) == {"workload", "queue"}
    text = str(answer)
    assert "sqlite" not in text and "postgresql" not in text and served.worker not in text


def test_an_open_address_without_tokens_is_refused_at_start(store: object) -> None:
    from zeroloop.store.database import Store

    assert isinstance(store, Store)
    tokens = Tokens(store)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.org")
    check_bind("127.0.0.1", tokens)
    with pytest.raises(ConfigError, match="no usable token"):
        check_bind("0.0.0.0", tokens)
    tokens.create(Role.WORKER, node="w1")
    check_bind("0.0.0.0", tokens)


def test_a_chunked_body_over_the_limit_is_refused_too(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"utilisation": {"x": "'
        for _ in range(5):
            yield b"y" * 1_000_000
        yield b'"}}'

    answer = served.client.post(f"{W1}/heartbeat", content=chunks(), headers=Served.auth(served.worker))
    assert answer.status_code == 413 and "max_body_bytes" in answer.json()["detail"]


def test_uploads_over_the_artifact_limit_are_refused_declared_or_streamed(
    store_url: str, tmp_path: Path, settings: object
) -> None:
    data = b"z" * 8000
    sha = hashlib.sha256(data).hexdigest()
    with make_app(store_url, tmp_path, server=ServerSettings(max_artifact_bytes=4096)) as app:
        token, _ = Tokens(app.store).create(Role.WORKER, node="w1")
        register_node(app, "w1")
        job = app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
        assert app.queue.claim("w1") is not None
        params = {"kind": "game_batch", "producer_job_id": job.id}
        with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            headers = Served.auth(token)
            declared = client.put(f"{W1}/artifacts/{sha}", params=params, content=data, headers=headers)
            streamed = client.put(
                f"{W1}/artifacts/{sha}", params=params, content=iter([data[:4000], data[4000:]]), headers=headers
            )
        for answer in (declared, streamed):
            assert answer.status_code == 413 and "max_artifact_bytes" in answer.json()["detail"]
        with app.store.read() as conn:
            assert conn.execute(sa.select(artifacts.c.sha256)).scalars().all() == []
        assert list((tmp_path / "data" / "server" / "uploads").iterdir()) == []


def test_a_job_completes_only_with_an_outcome_event_and_daemon_rows_only_for_the_node(served: Served) -> None:
    w1 = Served.auth(served.worker)
    job = served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    lease = served.client.post(f"{W1}/jobs/claim", json={}, headers=w1).json()["lease"]
    progress = {"type": "TRAINING_PROGRESS", "payload": {"config_key": "tic_tac_toe_2p", "job_id": job.id, "step": 1,
                "loss": 1.0, "samples_per_s": 1.0}}  # fmt: skip
    wrong = served.client.post(
        f"{W1}/jobs/{job.id}/complete", json={"token": lease["lease_token"], "event": progress}, headers=w1
    )
    assert wrong.status_code == 403 and "completes with one of" in wrong.json()["detail"]
    assert served.app.queue.get(job.id).status is JobStatus.RUNNING
    row = {"node": "w2", "name": "x", "state": "running", "restarts": 0, "health": {}, "updated_at": 1.0}
    other = served.client.post(f"{W1}/daemons", json={"rows": [row]}, headers=w1)
    assert other.status_code == 403 and "only its own daemon records" in other.json()["detail"]
    info = {"id": "w1", "host": "h", "cores": 3}
    bad = served.client.post(f"{W1}/register", json={"info": info}, headers=w1)
    assert bad.status_code == 400 and "body.info.cores: Extra inputs are not permitted" in bad.json()["detail"]


def test_readiness_fails_while_the_schema_is_behind(served: Served) -> None:
    with served.app.store.transaction() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0003'"))
    answer = served.client.get("/readyz")
    assert answer.status_code == 503 and answer.json() == {"status": "unready"}  # the why is in the server's log
    assert served.client.get("/healthz").status_code == 200


def test_two_servers_over_one_store_hand_out_each_job_once(served: Served) -> None:
    queued = [served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1}).id for _ in range(4)]
    w1 = Served.auth(served.worker)
    with running_server(served.app) as second, httpx.Client(base_url=second, timeout=30) as other:
        clients = [served.client, other, served.client, other, other]
        leases = [client.post(f"{W1}/jobs/claim", json={}, headers=w1).json()["lease"] for client in clients]
    assert sorted(lease["id"] for lease in leases[:4]) == sorted(queued) and leases[4] is None


def test_unknown_endpoints_and_job_ids_that_are_not_numbers_get_a_json_4xx(served: Served) -> None:
    w1 = Served.auth(served.worker)
    missing = served.client.post(f"{W1}/jobs/claim/now", json={}, headers=w1)
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"
    assert "no worker endpoint POST" in missing.json()["detail"]
    method = served.client.get(f"{W1}/jobs/claim", headers=w1)
    assert method.status_code == 405 and method.json()["error"] == "MethodNotAllowed"
    assert method.headers["allow"] == "POST"
    wrong = served.client.post(f"{W1}/jobs/seven/complete", json={"token": 1}, headers=w1)
    assert wrong.status_code == 400 and "'seven' is not a number" in wrong.json()["detail"]
    for huge in (2**63, -1, 0):
        far = served.client.post(f"{W1}/jobs/{huge}/heartbeat", json={"token": 1}, headers=w1)
        assert far.status_code == 400 and "out of range" in far.json()["detail"], huge


def test_a_failure_inside_an_endpoint_is_a_logged_500_that_sends_no_traceback(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire at /secret/path")

    monkeypatch.setattr("zeroloop.queue.manager.JobQueue.claim_many", broken)
    answer = served.client.post(f"{W1}/jobs/claim", json={}, headers=Served.auth(served.worker))
    assert answer.status_code == 500
    assert answer.json() == {"error": "InternalError", "detail": "internal server error; see the server log"}
    assert "/secret/path" not in answer.text and "Traceback" not in answer.text
    assert any("disk on fire" in record.getMessage() for record in caplog.records)


def test_a_failure_storing_an_upload_is_a_logged_500_and_leaves_no_partial_file(
    served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("bucket gone at s3://secret-bucket")

    monkeypatch.setattr("zeroloop.artifacts.repository.Artifacts.put", broken)
    job_id, _token = _held_job(served)
    content = b"a game batch"
    sha = hashlib.sha256(content).hexdigest()
    params = {"kind": "game_batch", "producer_job_id": job_id}
    answer = served.client.put(
        f"{W1}/artifacts/{sha}", params=params, content=content, headers=Served.auth(served.worker)
    )
    assert answer.status_code == 500 and answer.json()["error"] == "InternalError"
    assert "secret-bucket" not in answer.text
    assert any("bucket gone" in record.getMessage() for record in caplog.records)
    uploads = served.app.settings.data_dir / "server" / "uploads"
    assert list(uploads.iterdir()) == []


@pytest.mark.parametrize("refusal", ["too large", "bad token"])
def test_a_worker_refused_in_the_middle_of_a_large_upload_hears_why_and_does_not_retry(
    store_url: str, tmp_path: Path, settings: object, refusal: str
) -> None:
    big = tmp_path / "batch.npz"
    big.write_bytes(os.urandom(24 * 1024 * 1024))  # far more than the socket buffers hold: refused mid-send
    limit = 1024 * 1024 if refusal == "too large" else 10**9
    with make_app(store_url, tmp_path, server=ServerSettings(max_artifact_bytes=limit)) as app:
        token, _ = Tokens(app.store).create(Role.WORKER, node="w1")
        presented, error = (token, TooLarge) if refusal == "too large" else ("zl_0123456789ab_" + "x" * 43, AuthError)
        sleeps: list[float] = []
        with running_server(app) as url:
            client = ServerClient(ServerSettings(url=url, token=presented), "w1", sleep=sleeps.append)
            remote = RemoteArtifacts(client, LocalCache(tmp_path / "cache", 10**10))
            try:
                with pytest.raises(error):
                    remote.put(big, ArtifactKind.GAME_BATCH)
            finally:
                client.close()
        assert sleeps == [] and client.retries == 0
        with app.store.read() as conn:
            assert conn.execute(sa.select(artifacts.c.sha256)).scalars().all() == []


def test_downloads_that_fill_the_transfer_threads_do_not_hold_up_a_lease_heartbeat(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w1 = Served.auth(served.worker)
    source = tmp_path / "model.pt"
    source.write_bytes(b"weights")
    sha = served.app.artifacts.put(source, ArtifactKind.MODEL).sha256
    entered, release = threading.Semaphore(0), threading.Event()
    inside: list[str] = []
    original = Artifacts.fetch

    def slow(self: Artifacts, sha256: str) -> Path:  # a transfer that takes as long as the test says
        inside.append(sha256)
        entered.release()
        release.wait(timeout=60)
        return original(self, sha256)

    monkeypatch.setattr(Artifacts, "fetch", slow)
    job = served.app.queue.enqueue(jobs.SELFPLAY, "tic_tac_toe_2p", {"games": 1})
    token = served.client.post(f"{W1}/jobs/claim", json={"types": ["selfplay"]}, headers=w1).json()["lease"]
    answers: list[int] = []

    def download() -> None:
        with httpx.Client(base_url=served.url, timeout=60) as client:
            answers.append(client.get(f"{W1}/artifacts/{sha}", headers=w1).status_code)

    downloads = [threading.Thread(target=download) for _ in range(TRANSFER_THREADS + 2)]
    for thread in downloads:
        thread.start()
    try:
        for _ in range(TRANSFER_THREADS):
            assert entered.acquire(timeout=30), "the downloads did not all start"
        beat = served.client.post(f"{W1}/jobs/{job.id}/heartbeat", json={"token": token["lease_token"]}, headers=w1)
        assert beat.status_code == 200
        assert len(inside) == TRANSFER_THREADS and answers == []  # every transfer thread still busy, 2 waiting
    finally:
        release.set()
        for thread in downloads:
            thread.join(timeout=60)
    assert answers == [200] * (TRANSFER_THREADS + 2)
