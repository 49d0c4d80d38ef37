"""The HTTP client a worker uses to reach `zeroloop serve`: one connection pool, retries, errors by name.

A transport error (refused, reset, timed out) or a 502/503/504 is retried with
exponential backoff and full jitter, `server.retry_attempts` tries in all; the server
may be restarting. Every other answer is final: a 4xx raises the zeroloop error the
server named (StaleLeaseError, QueueError, ArtifactError, AuthError, ...). Retrying a
request whose answer was lost is safe: claims that were granted unseen expire, results
and events carry fencing tokens and dedup keys. The token never appears in a message.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from zeroloop import tracing
from zeroloop.config import ServerSettings
from zeroloop.errors import ConfigError
from zeroloop.remote import wire

log = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({502, 503, 504})


class ServerClient:
    """Calls the worker API of one server as one node (sleep: injectable, seconds)."""

    def __init__(
        self,
        settings: ServerSettings,
        node: str,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.url:
            raise ConfigError("server.url is not set: give ZEROLOOP_SERVER__URL=http(s)://host:port")
        self.settings = settings
        self.node = node
        self.sleep = sleep
        self.rng = rng or random.Random()
        headers = {"User-Agent": "zeroloop-worker"}
        if settings.token is not None:
            headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
        self.http = httpx.Client(
            base_url=f"{settings.url}{wire.API}/{node}",
            headers=headers,
            timeout=settings.request_timeout_s,
            transport=transport,
        )
        self.retries = 0  # transport failures retried so far (for health details and tests)

    def delay_s(self, attempt: int) -> float:
        """The wait before retry number `attempt` (1-based): full jitter under a doubling cap (seconds)."""
        cap = min(self.settings.retry_max_s, self.settings.retry_initial_s * 2 ** (attempt - 1))
        return self.rng.uniform(0, cap)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request (retried on transport errors) and return its JSON answer; raise the server's error."""
        with self.request(method, path, **kwargs) as response:
            response.read()
            return response.json()

    @contextmanager
    def request(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """The response to one request, open while the block runs (read its body in the block when streaming)."""
        attempts = self.settings.retry_attempts
        for attempt in range(1, attempts + 1):
            problem: str
            try:
                built = self.http.build_request(method, path, **kwargs)
                parent = tracing.traceparent()
                if parent is not None:  # inside a traced job: the server continues its trace
                    built.headers["traceparent"] = parent
                response = self.http.send(built, stream=True)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in _RETRY_STATUSES:
                    try:
                        if response.status_code >= 400:
                            response.read()
                            self._raise(response)
                        yield response
                    finally:
                        response.close()
                    return
                response.close()
                problem = f"HTTP {response.status_code}"
            if attempt == attempts:
                raise wire.ServerUnavailable(
                    f"{method} {path} to {self.settings.url} failed {attempts} times ({problem}); "
                    "check the server and the network, or raise server.retry_attempts"
                )
            self.retries += 1
            wait = self.delay_s(attempt)
            log.warning("%s %s failed (%s); retry %d/%d in %.1f s", method, path, problem, attempt, attempts - 1, wait)
            self.sleep(wait)

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        wire.raise_error(response.status_code, body if isinstance(body, dict) else None, f"HTTP {response.status_code}")

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()
