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
- any other token waits (on the event loop, holding no thread) for a read of the ids of
  every token and live credential begun after it arrived: one read serves every request
  waiting, and reads begin at most every IDS_EVERY_S, so a flood of random tokens costs
  the store four small reads a second, not one lookup each. A token whose id is not
  among them is answered 401 (a token created a moment before is among them);
- the rest are checked against the store on a few threads of their own, at most
  `server.unverified_requests` at once; more are answered 503 at once (the worker
  retries), so bad tokens never queue in front of, or take the threads of, real workers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from zeroloop.config import ServerSettings
from zeroloop.control.tokens import Admission, Tokens, not_valid
from zeroloop.remote import wire

_REMEMBERED = 10_000  # addresses and tokens whose buckets are kept at once; the least recent go first
IDS_EVERY_S = 0.25  # reads of the live token ids begin at most this often (seconds)


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
        self._ids_began = -math.inf  # when the last read of the live ids that finished began (monotonic seconds)
        self._ids_reading: asyncio.Future[None] | None = None  # the read under way or due, shared by its waiters

    async def admit(self, address: str, presented: str | None) -> Pass:
        """Let a request in, or raise the error it is answered with (AuthError, RateLimited, Busy): at once, or
        after the next read of the live ids."""
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
        assert presented is not None or self.loopback
        if presented is not None:
            await self._ids_after(now)
            if not self.tokens.may_exist(presented):
                self.failed(address)
                self.refused += 1
                raise not_valid(*presented.split("_", 2)[:2])
        if self.unverified >= self.unverified_cap:
            self.refused += 1
            raise wire.Busy(
                f"the server is checking {self.unverified_cap} unknown tokens already: retry shortly "
                "(server.unverified_requests)"
            )
        self.unverified += 1
        return Pass(self.checking, unverified=True)

    async def _ids_after(self, arrived: float) -> None:
        """Return once the live ids were read by a read begun at or after `arrived` (StoreError if it failed)."""
        while self._ids_began < arrived:
            if self._ids_reading is None:
                self._ids_reading = asyncio.ensure_future(self._read_ids())
            await asyncio.shield(self._ids_reading)

    async def _read_ids(self) -> None:
        """Read the live ids once, IDS_EVERY_S after the last read began at the earliest."""
        try:
            await asyncio.sleep(max(0.0, self._ids_began + IDS_EVERY_S - self.clock()))
            began = self.clock()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.checking, lambda: self.tokens.refresh_ids(within_s=0.0))
            self._ids_began = began
        finally:  # a failed read (StoreError: a 503 for each waiting request) leaves the next to the next request
            self._ids_reading = None

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
