"""The worker's HTTP client: retries transport errors with jittered backoff, and re-raises the server's errors."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import httpx
import pytest

from zeroloop.artifacts.cache import LocalCache
from zeroloop.config import ServerSettings
from zeroloop.errors import ArtifactError, AuthError, ConfigError, Forbidden, StaleLeaseError, ZeroloopError
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteArtifacts, RemoteQueue
from zeroloop.remote.wire import ServerUnavailable

TOKEN = "zl_0123456789ab_" + "s" * 43


def _client(handler: httpx.MockTransport, sleeps: list[float], **settings: object) -> ServerClient:
    config = ServerSettings(url="http://server:1", token=TOKEN, retry_initial_s=1.0, retry_max_s=4.0, **settings)  # type: ignore[arg-type]
    return ServerClient(config, "w1", transport=handler, sleep=sleeps.append, rng=random.Random(7))


def test_transport_errors_are_retried_with_jittered_backoff_then_succeed() -> None:
    calls: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= 2:
            raise httpx.ConnectError("connection refused")
        if len(calls) == 3:
            return httpx.Response(503, json={"error": "StoreUnavailable", "detail": "restarting"})
        return httpx.Response(200, json={"lease": None})

    sleeps: list[float] = []
    client = _client(httpx.MockTransport(handle), sleeps)
    assert client.call("POST", "/jobs/claim", json={}) == {"lease": None}
    assert len(calls) == 4 and client.retries == 3
    assert [str(call.url) for call in calls] == ["http://server:1/api/v1/worker/w1/jobs/claim"] * 4
    assert calls[0].headers["Authorization"] == f"Bearer {TOKEN}"
    caps = [1.0, 2.0, 4.0]
    assert len(sleeps) == 3 and all(0 <= wait <= cap for wait, cap in zip(sleeps, caps, strict=True))
    assert len(set(sleeps)) == 3  # jittered, not a fixed schedule


def test_a_server_that_stays_away_ends_in_one_clear_error_without_the_token() -> None:
    sleeps: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    client = _client(httpx.MockTransport(handle), sleeps, retry_attempts=3)
    with pytest.raises(ServerUnavailable, match="failed 3 times") as raised:
        client.call("GET", "/settings")
    assert len(sleeps) == 2 and TOKEN not in str(raised.value) and "s" * 43 not in str(raised.value)


@pytest.mark.parametrize(
    "status, body, error",
    [
        (409, {"error": "StaleLeaseError", "detail": "re-leased"}, StaleLeaseError),
        (422, {"error": "ArtifactError", "detail": "bytes differ"}, ArtifactError),
        (401, {"error": "AuthError", "detail": "token revoked"}, AuthError),
        (403, {"error": "Forbidden", "detail": "not as w2"}, Forbidden),
        (401, None, AuthError),
        (418, {"error": "SomethingNew", "detail": "a newer server"}, ZeroloopError),
    ],
)
def test_error_answers_are_final_and_raise_the_error_the_server_named(
    status: int, body: dict[str, str] | None, error: type[Exception]
) -> None:
    sleeps: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body) if body else httpx.Response(status, text="nope")

    client = _client(httpx.MockTransport(handle), sleeps)
    with pytest.raises(error) as raised:
        client.call("POST", "/jobs/1/complete", json={"token": 1})
    assert type(raised.value) is error and sleeps == []
    if body:
        assert str(raised.value) == body["detail"]


def test_a_worker_without_a_server_url_is_told_what_to_set() -> None:
    with pytest.raises(ConfigError, match="ZEROLOOP_SERVER__URL"):
        ServerClient(ServerSettings(), "w1")


def test_server_settings_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="http"):
        ServerSettings(url="ftp://server")
    with pytest.raises(ConfigError, match="tls_keyfile"):
        ServerSettings(tls_certfile="/etc/cert.pem")  # type: ignore[arg-type]


def test_a_download_whose_bytes_miss_their_digest_never_enters_the_cache(tmp_path: Path) -> None:
    wanted = hashlib.sha256(b"the real model").hexdigest()

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"tampered in transit")

    cache = LocalCache(tmp_path / "cache", 10**9)
    artifacts = RemoteArtifacts(_client(httpx.MockTransport(handle), []), cache)
    with pytest.raises(ArtifactError, match="arrived as"):
        artifacts.fetch(wanted)
    assert cache.get(wanted) is None and [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_the_remote_queue_acts_only_as_its_client_node() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be sent")

    queue = RemoteQueue(_client(httpx.MockTransport(handle), []))
    with pytest.raises(ValueError, match="acts as node 'w1', not 'w2'"):
        queue.claim("w2")
