"""API tokens: create, list, revoke, and check one presented with a request.

A token reads `zl_<id>_<secret>`. The id is public (it names the token in `tokens ls`
and in logs); the secret is 32 random bytes, shown once at creation and stored only as
its sha256. A high-entropy secret needs no slow key derivation: guessing it is as hard
as guessing the hash. Checking looks the row up by id and compares hashes in constant
time, so timing tells nothing about the secret.

A server checks every request's token; with `cache_s` it trusts a token it checked
within the last `cache_s` seconds without asking the store again (keyed by the digest
of the whole presented text, so a wrong secret never matches). A revocation then takes
effect on that server within `cache_s`; an expiry is honoured exactly.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroloop.errors import AuthError, ConfigError, Forbidden
from zeroloop.store.database import Store
from zeroloop.store.queries import tokens as queries

_FORMAT = re.compile(r"^zl_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_\-]{20,100})$")
_DURATION = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw]?)$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
TOUCH_EVERY_S = 60.0
_CACHE_MAX = 10_000  # tokens remembered at once; beyond that the cache starts afresh


class Role(enum.StrEnum):
    """What a token may do: a worker acts as its node on the worker API; a viewer reads; an admin does all."""

    WORKER = "worker"
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who a checked token speaks for: its id, role and (worker tokens) the one node it may act as."""

    token_id: str
    role: Role
    node: str | None

    def may_act_as(self, node: str) -> None:
        """Raise Forbidden unless this token may use the worker API as `node`."""
        if self.role is Role.ADMIN:
            return
        if self.role is not Role.WORKER:
            raise Forbidden(f"token {self.token_id} is a {self.role.value} token: the worker API needs a worker token")
        if self.node != node:
            raise Forbidden(f"token {self.token_id} acts as node {self.node!r} only, not as {node!r}")


# Who a request speaks for on a loopback server while the store holds no usable token: this machine's admin.
LOCAL = Principal("local", Role.ADMIN, None)


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `15m`, `12h`, `30d`, `2w` (a bare number is seconds)."""
    match = _DURATION.match(text.strip())
    if not match or float(match["amount"]) <= 0:
        raise ConfigError(f"duration {text!r} is invalid: give a positive number with s, m, h, d or w (e.g. 30d)")
    return float(match["amount"]) * _UNIT_S[match["unit"]]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Tokens:
    """Named operations on the API tokens of one store (clock: epoch seconds, injectable)."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time, cache_s: float = 0.0) -> None:
        self.store = store
        self.clock = clock
        self.cache_s = cache_s
        self._checked: dict[str, tuple[float, float | None, Principal]] = {}  # digest -> (checked at, expiry, who)

    def create(
        self, role: Role, *, node: str | None = None, expires_s: float | None = None, note: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Make a token; return its full text (shown once, never stored) and its stored row."""
        role = Role(role)
        if role is Role.WORKER and not node:
            raise ConfigError("a worker token acts as one node: give --node NODE")
        if role is not Role.WORKER and node:
            raise ConfigError("only worker tokens are tied to a node: drop --node or use --role worker")
        if expires_s is not None and expires_s <= 0:
            raise ConfigError("expiry must be a positive number of seconds")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        row = {
            "id": token_id,
            "secret_sha256": _digest(secret),
            "role": role.value,
            "node": node,
            "note": note,
            "created_at": now,
            "expires_at": None if expires_s is None else now + expires_s,
            "revoked_at": None,
            "last_used_at": None,
        }
        with self.store.transaction() as conn:
            queries.insert_token(conn, row)
        return f"zl_{token_id}_{secret}", row

    def list(self) -> list[dict[str, Any]]:
        """Every token's row (hashes included; never a secret), oldest first."""
        with self.store.read() as conn:
            return queries.list_tokens(conn)

    def revoke(self, token_id: str) -> None:
        """Revoke a token at once; ConfigError when there is no such live token."""
        with self.store.transaction() as conn:
            if not queries.revoke_token(conn, token_id, self.clock()):
                raise ConfigError(f"no unrevoked token {token_id!r}: see `zeroloop tokens ls`")

    def any_usable(self) -> bool:
        """Whether at least one token is neither revoked nor expired (asked of the store every time: the
        first token created closes the loopback trust at once)."""
        with self.store.read() as conn:
            return queries.count_usable(conn, self.clock()) > 0

    def principal(self, presented: str | None, *, loopback: bool) -> Principal:
        """Who a request presenting `presented` (or nothing) speaks for: LOCAL on a `loopback` server while no
        token is usable at all (asked of the store each time), else the checked token (AuthError)."""
        if not presented and loopback and not self.any_usable():
            return LOCAL
        return self.check(presented)

    def check(self, presented: str | None) -> Principal:
        """The principal of a presented token; AuthError (never echoing the secret) when it is not usable."""
        if not presented:
            raise AuthError("no token: send `Authorization: Bearer <token>` (see `zeroloop tokens create`)")
        match = _FORMAT.match(presented)
        if match is None:
            raise AuthError("malformed token: expected zl_<id>_<secret> from `zeroloop tokens create`")
        token_id = match["id"]
        now = self.clock()
        digest = _digest(presented)
        cached = self._checked.get(digest)
        if cached is not None and now - cached[0] < self.cache_s and (cached[1] is None or cached[1] > now):
            return cached[2]
        with self.store.read() as conn:
            row = queries.get_token(conn, token_id)
        # Compare against a dummy hash when the id is unknown, so both paths take the same time.
        stored = row["secret_sha256"] if row else "0" * 64
        if not hmac.compare_digest(stored, _digest(match["secret"])) or row is None:
            raise AuthError(f"token {token_id} is not valid: check ZEROLOOP_SERVER__TOKEN")
        if row["revoked_at"] is not None:
            raise AuthError(f"token {token_id} was revoked: ask for a new one")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise AuthError(f"token {token_id} expired: ask for a new one")
        if row["last_used_at"] is None or now - row["last_used_at"] >= TOUCH_EVERY_S:
            with self.store.transaction() as conn:
                queries.touch_token(conn, token_id, now)
        principal = Principal(token_id, Role(row["role"]), row["node"])
        if self.cache_s > 0:
            if len(self._checked) >= _CACHE_MAX:
                self._checked.clear()
            self._checked[digest] = (now, row["expires_at"], principal)
        return principal
