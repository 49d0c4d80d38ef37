"""The HTTP client a worker uses to reach `zeroloop serve`: kept-alive connections, retries, errors by name.

A transport error (refused, reset, timed out, the connection closed before an answer)
or a 502/503/504 is retried with exponential backoff and full jitter,
`server.retry_attempts` tries in all; the server may be restarting. Every other answer
is final: a 4xx raises the zeroloop error the server named (StaleLeaseError,
QueueError, ArtifactError, AuthError, ...). Retrying a request whose answer was lost is
safe: claims that were granted unseen expire, results and events carry fencing tokens
and dedup keys. The token never appears in a message.

It speaks HTTP/1.1 through the standard library's http.client, one kept-alive
connection per thread that is using it at the moment: a worker's requests are small and
frequent, and a general-purpose client costs several times the CPU per request (see
docs/server.md, "Cost"). HTTPS verifies the server against the system's certificate
authorities (OpenSSL honours SSL_CERT_FILE and SSL_CERT_DIR), or against
`server.ca_file` alone when it is set.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from zeroloop import tracing
from zeroloop.config import ServerSettings
from zeroloop.errors import ArtifactError, AuthError, ConfigError
from zeroloop.remote import wire

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({502, 503, 504})
_HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH
_CREDENTIAL_PATH = "/credential"
# A connection idle this long is closed rather than reused: uvicorn closes kept-alive
# connections after 5 s of quiet, and a request sent as it does so would be lost.
_IDLE_S = 4.0
# What a dropped or refused connection raises (http.client's own errors, and the socket's).
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class Answer:
    """One response from the server, open until its request's block ends."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response
        self.status = response.status

    def read(self) -> bytes:
        """The whole body."""
        return self.response.read()

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.response.read())

    def header(self, name: str) -> str | None:
        """One response header, or None."""
        return self.response.getheader(name)

    def iter_bytes(self, size: int) -> Iterator[bytes]:
        """The body in chunks of at most `size` bytes (raises IncompleteRead if the server stops short)."""
        while chunk := self.response.read(size):
            yield chunk


class ServerClient:
    """Calls the worker API of one server as one node (sleep: injectable, seconds). Safe to share between threads."""

    def __init__(
        self,
        settings: ServerSettings,
        node: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        credentials: bool = False,
    ) -> None:
        """`credentials`: exchange the token for node-bound credentials (what `zeroloop worker` does), rather
        than present the token itself on every request."""
        if not settings.url:
            raise ConfigError("server.url is not set: give ZEROLOOP_SERVER__URL=http(s)://host:port")
        self.settings = settings
        self.node = node
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock
        parts = urlsplit(settings.url)
        if parts.hostname is None:
            raise ConfigError(f"server.url {settings.url!r} names no host")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = f"{parts.path.rstrip('/')}{wire.API}/{quote(node, safe='')}"
        self.tls: ssl.SSLContext | None = None
        if self.https:
            ca_file = settings.ca_file
            try:
                self.tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"server.ca_file {ca_file}: cannot load certificates from it ({exc})") from None
            if settings.tls_client_certfile is not None:
                try:
                    self.tls.load_cert_chain(str(settings.tls_client_certfile), str(settings.tls_client_keyfile))
                except (OSError, ssl.SSLError) as exc:
                    where = f"{settings.tls_client_certfile} / {settings.tls_client_keyfile}"
                    raise ConfigError(f"server.tls_client_certfile and keyfile {where}: cannot load ({exc})") from None
        self.headers = {"User-Agent": "zeroloop-worker", "Host": parts.netloc.rpartition("@")[2]}
        # The token opens the door once; then a node-bound credential the server issued is presented
        # instead, refreshed as the node heartbeats (or here, late in its life), re-issued if it lapsed.
        self.token = settings.token.get_secret_value() if settings.token is not None else None
        self._credential: tuple[str, float, float] | None = None  # text, monotonic deadline, lifetime (s)
        self._offered: bool | None = None if self.token and credentials else False  # does the server issue them?
        self._storage_tls: ssl.SSLContext | None = None
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        self.retries = 0  # transport failures retried so far (for health details and tests)

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1-based): full jitter under a doubling cap (seconds)."""
        cap = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2 ** (attempt - 1))
        return self.rng.uniform(0, cap)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request (retried on transport errors) and return its JSON answer; raise the server's error."""
        with self.request(method, path, **kwargs) as answer:
            return answer.json()

    @contextmanager
    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: Iterable[bytes] | None = None,
    ) -> Iterator[Answer]:
        """The answer to one request, open while the block runs (read its body in the block when streaming).

        `json`: a JSON body; `content`: a body in chunks, iterated afresh on each try (give its
        Content-Length in `headers`); `params`: the query string.
        """
        target = f"{self.prefix}{path}" + (f"?{urlencode(params)}" if params else "")
        if path != _CREDENTIAL_PATH:
            self._keep_credential()
        sent = dict(self.headers)
        sent.update(headers or {})
        body: Any = None
        if json is not None:
            body = _dumps(json)
            sent["Content-Type"] = "application/json"
        elif content is not None:
            body = content
        parent = tracing.traceparent()
        if parent is not None:  # inside a traced job: the server continues its trace
            sent["traceparent"] = parent
        attempts = self.settings.retry_attempts
        reauthenticated = False
        attempt = 0
        while attempt < attempts:
            attempt += 1
            problem: str
            presented = self._presented()
            if presented is not None:
                sent["Authorization"] = f"Bearer {presented}"
            try:
                connection, response = self._send(method, target, body, sent)
            except http.client.InvalidURL as exc:  # no retry mends this either
                raise ConfigError(f"{method} {path}: not a valid request to {self.settings.url} ({exc})") from None
            except ssl.SSLCertVerificationError as exc:  # no retry mends this: say what to set
                if exc.verify_code == _HOSTNAME_MISMATCH:
                    raise ConfigError(
                        f"{self.settings.url} presented a certificate issued for other names ({exc.verify_message}): "
                        f"use a server.url whose host the certificate names, or re-issue it with {self.host} "
                        "among its names"
                    ) from None
                trust = f"server.ca_file {self.settings.ca_file}" if self.settings.ca_file else "the system's CAs"
                raise ConfigError(
                    f"{self.settings.url} presented a certificate {trust} do not vouch for ({exc.verify_message}); "
                    "set server.ca_file to the PEM of the CA that signed it"
                ) from None
            except ssl.SSLError as exc:
                if "CERTIFICATE_REQUIRED" in str(exc).upper().replace(" ", "_"):  # no retry mends this either
                    raise ConfigError(
                        f"{self.settings.url} asks for a client certificate (mutual TLS): set "
                        "server.tls_client_certfile and server.tls_client_keyfile to one its CA signed"
                    ) from None
                problem = f"{type(exc).__name__}: {exc}"
            except _TRANSPORT_ERRORS as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status == 401 and presented is not None and presented != self.token and not reauthenticated:
                    # The credential lapsed (the worker was asleep past its life): present the token again once.
                    refusal = _refusal(response)
                    self._discard(connection, response)
                    if refusal.get("error") == "TokenRevoked":
                        wire.raise_error(401, refusal, "revoked")
                    self._credential, reauthenticated, attempt = None, True, attempt - 1
                    if path != _CREDENTIAL_PATH:
                        self._keep_credential()
                    continue
                if response.status == 429:
                    refusal = _refusal(response)
                    self._discard(connection, response)
                    if refusal.get("error") != "RateLimited" or attempt == attempts:
                        wire.raise_error(429, refusal, "HTTP 429")
                    self._back_off(attempt, f"{method} {path}", f"HTTP 429: {refusal.get('detail', '')}")
                    continue
                if response.status not in _RETRY_STATUSES:
                    yield from self._answer(connection, response)
                    return
                self._discard(connection, response)
                problem = f"HTTP {response.status}"
            if attempt == attempts:
                raise wire.ServerUnavailable(
                    f"{method} {path} to {self.settings.url} failed {attempts} times ({problem}); "
                    "check the server and the network, or raise server.retry_attempts"
                )
            self._back_off(attempt, f"{method} {path}", problem)

    @contextmanager
    def signed(self, url: str) -> Iterator[Answer]:
        """GET a URL the server signed for the object store holding an artifact: a connection of its own,
        with none of this client's headers (the token never leaves for the store). Transport errors and
        5xx are retried as the server's are; any other failure (an expired signature) is an ArtifactError."""
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.hostname}"
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ArtifactError(f"the server redirected a download to {where}: not a URL")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            port = parts.port
        except ValueError:
            raise ArtifactError(f"the server redirected a download to {where}: not a valid port") from None
        attempts = self.settings.retry_attempts
        for attempt in range(1, attempts + 1):
            connection = self._storage_connection(parts.scheme, parts.hostname, port)
            try:
                connection.request("GET", target, headers={"User-Agent": "zeroloop-worker"})
                response = connection.getresponse()
            except ssl.SSLCertVerificationError as exc:  # no retry mends this
                connection.close()
                raise ArtifactError(
                    f"the object store at {where} presented a certificate nothing here trusts ({exc.verify_message}); "
                    "add its CA to server.ca_file"
                ) from None
            except _TRANSPORT_ERRORS as exc:
                connection.close()
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status == 200:
                    try:
                        yield Answer(response)
                    finally:
                        connection.close()
                    return
                response.close()
                connection.close()
                problem = f"HTTP {response.status}"
                if response.status < 500:
                    raise ArtifactError(f"the object store at {where} refused the signed download ({problem})")
            if attempt == attempts:
                raise ArtifactError(f"the signed download from {where} failed {attempts} times ({problem})")
            self._back_off(attempt, f"download from {where}", problem)

    def _back_off(self, attempt: int, what: str, problem: str) -> None:
        """Count a failed try, say so, and wait the jittered delay before try `attempt + 1`."""
        with self._lock:
            self.retries += 1
        wait, retries = self.delay_s(attempt), self.settings.retry_attempts - 1
        log.warning("%s failed (%s); retry %d/%d in %.1f s", what, problem, attempt, retries, wait)
        self.sleep(wait)

    def _storage_connection(self, scheme: str, host: str, port: int | None) -> http.client.HTTPConnection:
        timeout = self.settings.request_timeout_s
        if scheme != "https":
            return http.client.HTTPConnection(host, port, timeout=timeout)
        if self._storage_tls is None:
            context = ssl.create_default_context()  # an object store's certificate: the system's CAs,
            if self.settings.ca_file:  # and a private CA's too (MinIO, Ceph)
                try:
                    context.load_verify_locations(cafile=str(self.settings.ca_file))
                except (OSError, ssl.SSLError) as exc:
                    ca_file = self.settings.ca_file
                    raise ConfigError(f"server.ca_file {ca_file}: cannot load certificates ({exc})") from None
            self._storage_tls = context
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._storage_tls)

    def _presented(self) -> str | None:
        """What this client presents now: its credential while it lives, else its token."""
        held = self._credential
        if held is not None and held[1] > self.clock():
            return held[0]
        return self.token

    def _keep_credential(self) -> None:
        """Exchange the token for a credential when none is held, or the one held is in its last quarter of life
        (the node's heartbeat normally refreshes it at half its life)."""
        if self._offered is False:
            return
        held = self._credential
        if held is not None and held[1] - self.clock() > held[2] / 4:
            return
        try:
            answer = self.call("POST", _CREDENTIAL_PATH, json={})
        except wire.NotFound:  # a server from before credentials: keep presenting the token
            self._offered = False
            return
        except AuthError:
            self._credential = None  # refused: the token asks next time (or the caller hears why it cannot)
            raise
        if answer.get("credential") is None:
            self._offered = False
            return
        self._offered = True
        self._adopt(str(answer["credential"]), float(answer["expires_at"]))

    def _adopt(self, credential: str, expires_at: float) -> None:
        lifetime = max(0.0, expires_at - time.time())
        self._credential = (credential, self.clock() + lifetime, lifetime)

    def _answer(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> Iterator[Answer]:
        fresh = response.getheader(wire.CREDENTIAL_HEADER)
        expires = response.getheader(wire.CREDENTIAL_EXPIRES_HEADER)
        if fresh and expires and response.status < 400:
            try:
                self._adopt(fresh, float(expires))
            except ValueError:
                log.warning("the server sent a credential with an unreadable expiry %r; ignored", expires[:40])
        answer = Answer(response)
        finished = False
        try:
            if response.status >= 400:
                self._raise(answer)
            yield answer
            finished = True
        finally:
            if finished and response.isclosed():
                self._keep(connection)  # read to its end: the connection may carry the next request
            else:
                connection.close()  # an error, or a body left unread: never reuse it

    def _send(
        self, method: str, target: str, body: Any, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send on a kept-alive connection, or a new one; a reused connection the server had closed
        meanwhile is replaced once at once (that is no failure of the server)."""
        connection, reused = self._take()
        try:
            connection.request(method, target, body=body, headers=headers)
            return connection, connection.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            connection.close()
            if not reused:
                raise
        except BaseException:
            connection.close()
            raise
        connection = self._connect()
        try:
            connection.request(method, target, body=body, headers=headers)
            return connection, connection.getresponse()
        except BaseException:
            connection.close()
            raise

    def _take(self) -> tuple[http.client.HTTPConnection, bool]:
        now = self.clock()
        with self._lock:
            stale = [connection for connection, since in self._idle if now - since >= _IDLE_S]
            self._idle = [(connection, since) for connection, since in self._idle if now - since < _IDLE_S]
            kept = self._idle.pop() if self._idle else None
        for connection in stale:  # closed, not left half-open after a burst of concurrent requests
            connection.close()
        return (kept[0], True) if kept else (self._connect(), False)

    def _connect(self) -> http.client.HTTPConnection:
        timeout = self.settings.request_timeout_s
        if self.tls is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self.tls)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _keep(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((connection, self.clock()))

    @staticmethod
    def _discard(connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        response.close()
        connection.close()

    @staticmethod
    def _raise(answer: Answer) -> None:
        try:
            body = answer.json()
        except ValueError:
            body = None
        wire.raise_error(answer.status, body if isinstance(body, dict) else None, f"HTTP {answer.status}")

    def close(self) -> None:
        """Close every kept-alive connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _since in idle:
            connection.close()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _refusal(response: http.client.HTTPResponse) -> dict[str, Any]:
    """The JSON body of a refusal ({} when it has none)."""
    try:
        body = json.loads(response.read(64 * 1024))
    except (ValueError, OSError, http.client.HTTPException):
        return {}
    return body if isinstance(body, dict) else {}
