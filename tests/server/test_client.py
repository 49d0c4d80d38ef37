"""The worker's HTTP client against a scripted HTTP/1.1 server on loopback: retries transport errors with
jittered backoff, re-raises the server's errors, keeps connections alive, and verifies HTTPS."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import serve_http
from zeroloop.artifacts.cache import LocalCache
from zeroloop.config import ServerSettings
from zeroloop.errors import ArtifactError, AuthError, ConfigError, Forbidden, StaleLeaseError, ZeroloopError
from zeroloop.remote.client import ServerClient
from zeroloop.remote.parts import RemoteArtifacts, RemoteQueue
from zeroloop.remote.wire import ServerUnavailable

TOKEN = "zl_0123456789ab_" + "s" * 43
DROP = "drop"  # close the connection without answering


@dataclass
class Script:
    """What the server answers, in order (an answer is (status, body bytes[, headers]), or DROP), and what it saw."""

    answers: list[Any] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    connections: int = 0
    close_after_answer: bool = False  # close each connection silently after answering, as an idle server does
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            with script.lock:
                script.connections += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with script.lock:
                script.requests.append((self.command, self.path, dict(self.headers.items()), body))
                answer = script.answers.pop(0) if script.answers else (200, b'{"ok":true}')
            if answer == DROP:
                self.close_connection = True
                return
            status, content, *extra = answer
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content)))
            for name, value in (extra[0] if extra else {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(content)
            if script.close_after_answer:
                self.close_connection = True

        do_GET = do_POST = do_PUT = _answer

    return Handler


def _serve(script: Script, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    with serve_http(_handler(script), tls) as url:
        yield url


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def url(script: Script) -> Iterator[str]:
    yield from _serve(script)


_opened: list[ServerClient] = []


@pytest.fixture(autouse=True)
def _closed() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def _client(url: str, sleeps: list[float], **settings: Any) -> ServerClient:
    config = ServerSettings(url=url, token=TOKEN, retry_initial_s=1.0, retry_max_s=4.0, **settings)
    client = ServerClient(config, "w1", sleep=sleeps.append, rng=random.Random(7))
    _opened.append(client)
    return client


def _answer(status: int, body: Any) -> tuple[int, bytes]:
    return status, json.dumps(body).encode() if not isinstance(body, bytes) else body


def test_transport_errors_are_retried_with_jittered_backoff_then_succeed(script: Script, url: str) -> None:
    script.answers = [DROP, DROP, _answer(503, {"error": "StoreUnavailable", "detail": "restarting"}),
                      _answer(200, {"lease": None})]  # fmt: skip
    sleeps: list[float] = []
    client = _client(url, sleeps)
    assert client.call("POST", "/jobs/claim", json={"types": None}) == {"lease": None}
    assert len(script.requests) == 4 and client.retries == 3
    assert [(method, path) for method, path, _h, _b in script.requests] == [
        ("POST", "/api/v1/worker/w1/jobs/claim")
    ] * 4
    assert all(json.loads(body) == {"types": None} for _m, _p, _h, body in script.requests)
    assert script.requests[0][2]["Authorization"] == f"Bearer {TOKEN}"
    caps = [1.0, 2.0, 4.0]
    assert len(sleeps) == 3 and all(0 <= wait <= cap for wait, cap in zip(sleeps, caps, strict=True))
    assert len(set(sleeps)) == 3  # jittered, not a fixed schedule


def test_a_server_that_stays_away_ends_in_one_clear_error_without_the_token() -> None:
    with socket.socket() as sock:  # a port nobody listens on: every connection is refused
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sleeps: list[float] = []
    client = _client(closed, sleeps, retry_attempts=3)
    with pytest.raises(ServerUnavailable, match="failed 3 times") as raised:
        client.call("GET", "/settings")
    assert "ConnectionRefusedError" in str(raised.value)
    assert len(sleeps) == 2 and TOKEN not in str(raised.value) and "s" * 43 not in str(raised.value)


@pytest.mark.parametrize(
    "status, body, error",
    [
        (409, {"error": "StaleLeaseError", "detail": "re-leased"}, StaleLeaseError),
        (422, {"error": "ArtifactError", "detail": "bytes differ"}, ArtifactError),
        (401, {"error": "AuthError", "detail": "token revoked"}, AuthError),
        (403, {"error": "Forbidden", "detail": "not as w2"}, Forbidden),
        (401, b"nope", AuthError),
        (418, {"error": "SomethingNew", "detail": "a newer server"}, ZeroloopError),
    ],
)
def test_error_answers_are_final_and_raise_the_error_the_server_named(
    script: Script, url: str, status: int, body: Any, error: type[Exception]
) -> None:
    script.answers = [_answer(status, body)]
    sleeps: list[float] = []
    client = _client(url, sleeps)
    with pytest.raises(error) as raised:
        client.call("POST", "/jobs/1/complete", json={"token": 1})
    assert type(raised.value) is error and sleeps == [] and len(script.requests) == 1
    if isinstance(body, dict):
        assert str(raised.value) == body["detail"]
    # The connection that carried the error is not reused: the next request opens another.
    assert client.call("GET", "/settings") == {"ok": True} and script.connections == 2


def test_requests_share_one_kept_alive_connection(script: Script, url: str) -> None:
    client = _client(url, [])
    for n in range(20):
        assert client.call("POST", f"/jobs/{n}/heartbeat", json={"token": n}) == {"ok": True}
    assert len(script.requests) == 20 and script.connections == 1


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_a_retry(script: Script, url: str) -> None:
    script.close_after_answer = True  # every idle connection is gone by the next request
    sleeps: list[float] = []
    client = _client(url, sleeps)
    for _ in range(3):
        assert client.call("GET", "/settings") == {"ok": True}
    assert len(script.requests) == 3 and script.connections == 3
    assert client.retries == 0 and sleeps == []


def test_a_connection_idle_past_the_servers_keep_alive_is_not_reused(script: Script, url: str) -> None:
    now = [1000.0]
    client = ServerClient(ServerSettings(url=url, token=TOKEN), "w1", clock=lambda: now[0])
    _opened.append(client)
    client.call("GET", "/settings")
    now[0] += 3.0
    client.call("GET", "/settings")
    assert script.connections == 1
    now[0] += 4.5  # uvicorn closes a connection after 5 s of quiet: past 4 s, open another
    client.call("GET", "/settings")
    assert script.connections == 2 and client.retries == 0


def test_threads_may_share_one_client(script: Script, url: str) -> None:
    client = _client(url, [])
    answers: list[Any] = []

    def calls() -> None:
        answers.extend(client.call("POST", "/heartbeat", json={"utilisation": {}}) for _ in range(40))

    threads = [threading.Thread(target=calls) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers == [{"ok": True}] * 120 and len(script.requests) == 120
    assert 1 <= script.connections <= 3 and client.retries == 0


def _certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_https_is_verified_against_server_ca_file_and_an_untrusted_certificate_is_not_retried(
    script: Script, tmp_path: Path
) -> None:
    cert, key = _certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    for url in _serve(script, tls):
        trusted = _client(url, [], ca_file=cert)
        assert trusted.call("GET", "/settings") == {"ok": True}
        sleeps: list[float] = []
        with pytest.raises(ConfigError, match=r"server\.ca_file") as raised:
            _client(url, sleeps).call("GET", "/settings")  # the system's CAs never signed it
        assert "certificate" in str(raised.value) and sleeps == []
        assert len(script.requests) == 1  # the refused handshake sent nothing
    with pytest.raises(ConfigError, match=r"server\.ca_file"):
        _client("https://127.0.0.1:1", [], ca_file=tmp_path / "missing.pem")


def test_a_worker_without_a_server_url_is_told_what_to_set() -> None:
    with pytest.raises(ConfigError, match="ZEROLOOP_SERVER__URL"):
        ServerClient(ServerSettings(), "w1")


def test_server_settings_refuse_bad_values() -> None:
    with pytest.raises(ConfigError, match="http"):
        ServerSettings(url="ftp://server")
    with pytest.raises(ConfigError, match="tls_keyfile"):
        ServerSettings(tls_certfile=Path("/etc/cert.pem"))


def test_a_download_whose_bytes_miss_their_digest_never_enters_the_cache(
    script: Script, url: str, tmp_path: Path
) -> None:
    wanted = hashlib.sha256(b"the real model").hexdigest()
    script.answers = [(200, b"tampered in transit")]
    cache = LocalCache(tmp_path / "cache", 10**9)
    artifacts = RemoteArtifacts(_client(url, []), cache)
    with pytest.raises(ArtifactError, match="arrived as"):
        artifacts.fetch(wanted)
    assert cache.get(wanted) is None and [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    assert script.requests[0][:2] == ("GET", f"/api/v1/worker/w1/artifacts/{wanted}")


def test_the_remote_queue_acts_only_as_its_client_node(script: Script, url: str) -> None:
    queue = RemoteQueue(_client(url, []))
    with pytest.raises(ValueError, match="acts as node 'w1', not 'w2'"):
        queue.claim("w2")
    assert script.requests == []


def test_a_download_redirected_to_a_signed_url_fetches_from_the_store_without_the_token(
    script: Script, url: str, tmp_path: Path
) -> None:
    content = b"model bytes from the object store"
    wanted = hashlib.sha256(content).hexdigest()
    storage = Script(answers=[(200, content), (200, b"tampered at the store"), (403, b"<Error>expired</Error>")])
    for store_url in _serve(storage):
        signed = f"{store_url}/bucket/{wanted}?X-Amz-Signature=abc&X-Amz-Expires=60"
        redirect = (307, b"", {"Location": signed})
        script.answers = [redirect, redirect, (200, content), redirect]
        sleeps: list[float] = []
        cache = LocalCache(tmp_path / "cache", 10**9)
        artifacts = RemoteArtifacts(_client(url, sleeps), cache)
        assert artifacts.fetch(wanted).read_bytes() == content
        method, path, headers, _body = storage.requests[0]
        assert (method, path) == ("GET", f"/bucket/{wanted}?X-Amz-Signature=abc&X-Amz-Expires=60")
        assert "Authorization" not in headers and TOKEN not in json.dumps(headers)
        # A copy in the store that misses its digest: the server is asked to stream it (and so verify it).
        cache.remove(wanted)
        assert artifacts.fetch(wanted).read_bytes() == content
        assert [path for _m, path, _h, _b in script.requests[1:3]] == [
            f"/api/v1/worker/w1/artifacts/{wanted}",
            f"/api/v1/worker/w1/artifacts/{wanted}?stream=1",
        ]
        cache.remove(wanted)
        with pytest.raises(ArtifactError, match=r"refused the signed download \(HTTP 403\)"):
            artifacts.fetch(wanted)
        assert cache.get(wanted) is None and sleeps == []  # a refusal is not retried
        assert len(script.requests) == 4 and len(storage.requests) == 3
        assert script.connections == 1  # the redirects' connection was read to its end and kept
