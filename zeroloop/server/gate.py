"""The worker API's front door: who gets in, how fast, and on whose threads, decided before any store work.

A flood of requests with bad tokens must not starve the workers (docs/server.md,
"Exposing the server"). Each request is admitted on the event loop, from memory alone:

- a missing or malformed token, or one this process already found unusable (the
  negative cache of `Tokens`), is answered 401 at once;
- a client address that made too many refused requests (`server.address_failures_per_s`,
  a token bucket holding ten seconds' worth) is answered 429 at once, unless it presents
  a token known to work;
- a token or credential that checked out before is *known*: its requests run on the
  known workers' own threads (`server.request_threads`), limited per token
  (`server.token_requests_per_s`, 429 past it);
- any other token is checked against the store on a few threads of its own, at most
  `server.unverified_requests` at once; more are answered 503 at once (the worker
  retries), so bad tokens never queue in front of, or take the threads of, real workers;
- while any of those threads is busy, a token whose id is not among the ids of the tokens
  and live credentials read within the last second (random bogus tokens) is answered
  503 at once, and the ids are read again (at most every IDS_EVERY_S).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from zeroloop.config import ServerSettings
from zeroloop.control.tokens import Admission, Tokens
from zeroloop.remote import wire

_REMEMBERED = 10_000  # addresses and tokens whose buckets are kept at once; the least recent go first
IDS_EVERY_S = 0.25  # under pressure, the live token ids are read again at most this often (seconds)


class Bucket:
    """A token bucket: `rate` per second, holding at most `burst` (times: monotonic seconds)."""

    __slots__ = ("burst", "level", "rate", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.level, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> bool:
        """Take one if there is one (refilled for the time passed); False when empty."""
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False

    def empty(self, now: float) -> bool:
        """Whether nothing is left now (without taking)."""
        return min(self.burst, self.level + (now - self.stamp) * self.rate) < 1.0

    def wait_s(self) -> int:
        """Whole seconds until one is back."""
        return max(1, math.ceil((1.0 - self.level) / self.rate))


class _Buckets:
    """Buckets by key, the least recently used forgotten beyond _REMEMBERED."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.by_key: OrderedDict[str, Bucket] = OrderedDict()

    def get(self, key: str, now: float) -> Bucket:
        bucket = self.by_key.get(key)
        if bucket is None:
            bucket = self.by_key[key] = Bucket(self.rate, self.burst, now)
            if len(self.by_key) > _REMEMBERED:
                self.by_key.popitem(last=False)
        else:
            self.by_key.move_to_end(key)
        return bucket


@dataclass(frozen=True)
class Pass:
    """A request let in: the threads it runs on, and whether it holds one of the unverified places."""

    pool: ThreadPoolExecutor
    unverified: bool


class Gate:
    """Admission of worker API requests (called on the event loop; its state is only touched there)."""

    def __init__(
        self, tokens: Tokens, settings: ServerSettings, *, loopback: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tokens = tokens
        self.loopback = loopback
        self.clock = clock
        self.known = ThreadPoolExecutor(settings.request_threads, thread_name_prefix="zeroloop-api")
        self.checking = ThreadPoolExecutor(settings.unverified_requests, thread_name_prefix="zeroloop-unverified")
        self.unverified_cap = settings.unverified_requests
        self.unverified = 0
        rate = settings.address_failures_per_s
        self.addresses = _Buckets(rate, 10 * rate)
        self.per_token = _Buckets(settings.token_requests_per_s, 2 * settings.token_requests_per_s)
        self.refused = 0  # requests answered without store work (for tests and /metrics)
        self._ids_asked = -math.inf  # when a read of the live ids was last asked for (monotonic seconds)

    def admit(self, address: str, presented: str | None) -> Pass:
        """Let a request in, or raise the error it is answered with at once (AuthError, RateLimited, Busy)."""
        now = self.clock()
        admission, refusal = self.tokens.admission(presented)
        if admission is Admission.KNOWN:
            assert presented is not None
            bucket = self.per_token.get(presented, now)
            if not bucket.take(now):
                self.refused += 1
                raise wire.RateLimited(
                    f"this token made more than {self.per_token.rate:g} requests per second: retry in "
                    f"{bucket.wait_s()} s (server.token_requests_per_s)"
                )
            return Pass(self.known, unverified=False)
        tried = self.addresses.get(address, now)
        if tried.empty(now):
            self.refused += 1
            raise wire.RateLimited(
                f"too many refused requests from {address}: retry in {tried.wait_s()} s (server.address_failures_per_s)"
            )
        if admission is Admission.REFUSED and not (presented is None and self.loopback):
            self.failed(address)
            assert refusal is not None
            self.refused += 1
            raise refusal[0](refusal[1])
        if admission is Admission.UNLISTED and self.unverified > 0:
            # Under pressure, a text whose id no token or credential had a moment ago waits for the next read
            # of the ids (a token created since then is let in once it is read; the worker retries a 503).
            self.failed(address)
            self.refused += 1
            if now - self._ids_asked >= IDS_EVERY_S:
                self._ids_asked = now
                self.checking.submit(self.tokens.refresh_ids, within_s=IDS_EVERY_S)
            raise wire.Busy("this token's id is not known here yet: retry shortly")
        if self.unverified >= self.unverified_cap:
            self.refused += 1
            raise wire.Busy(
                f"the server is checking {self.unverified_cap} unknown tokens already: retry shortly "
                "(server.unverified_requests)"
            )
        self.unverified += 1
        return Pass(self.checking, unverified=True)

    def done(self, admitted: Pass) -> None:
        """A request let in has been answered."""
        if admitted.unverified:
            self.unverified -= 1

    def failed(self, address: str) -> None:
        """Count a refused request (bad token, forbidden) against its address."""
        self.addresses.get(address, self.clock()).take(self.clock())

    def close(self) -> None:
        """Stop the threads (requests in flight finish)."""
        self.known.shutdown(wait=False)
        self.checking.shutdown(wait=False)
