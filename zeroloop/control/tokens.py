"""API tokens and the short-lived credentials issued under them: create, rotate, revoke, and check one presented.

A token reads `zl_<id>_<secret>`. The id is public (it names the token in `tokens ls`
and in logs); the secret is 32 random bytes, shown once at creation and stored only as
its sha256. A high-entropy secret needs no slow key derivation: guessing it is as hard
as guessing the hash. Checking looks the row up by id and compares hashes in constant
time, so timing tells nothing about the secret.

A worker token is a node's bootstrap secret: the worker exchanges it for a credential
(`zlc_<id>_<secret>`) bound to the same node that lives `server.credential_s`, and uses
that from then on, refreshed as it heartbeats. A credential dies with its token: revoking
the token refuses every credential issued under it (`TokenRevoked`, which a worker takes
as the order to stop). Rotating a token gives a new secret at once and lets the old one
work for a grace period, so running workers keep going on their credentials.

A server checks every request's token; with `cache_s` it trusts a token it checked
within the last `cache_s` seconds without asking the store again (keyed by the digest
of the whole presented text, so a wrong secret never matches). A revocation then takes
effect on that server within `cache_s`; an expiry is honoured exactly. A presented text
found unusable is remembered for `negative_cache_s` (a token once unusable never becomes
usable), so a flood of bad tokens costs no store lookup after the first of each.
`admission` answers from these caches alone, without the store: what the server's gate
uses to refuse cheaply and to give tokens it has seen work their own capacity.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroloop.errors import AuthError, ConfigError, Forbidden, TokenRevoked
from zeroloop.store.database import Store
from zeroloop.store.queries import tokens as queries

_FORMAT = re.compile(r"^(?P<kind>zlc?)_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_\-]{20,100})$")
_DURATION = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw]?)$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
TOUCH_EVERY_S = 60.0
CACHE_MAX = 10_000  # presented texts remembered at once, good and bad each; the oldest are forgotten first
KNOWN_S = 3600.0  # how long a text that once checked out is admitted as a known worker's (seconds)
IDS_FRESH_S = 1.0  # the live ids are read again at most this often, and trusted this long (seconds)


class Role(enum.StrEnum):
    """What a token may do: a worker acts as its node on the worker API; a viewer reads; an admin does all."""

    WORKER = "worker"
    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who a checked token speaks for: its id, role and (worker tokens) the one node it may act as.

    `credential`: the id of the credential presented, when it was one (its token's id is `token_id`);
    `expires_at`: when what was presented stops working (epoch seconds; None: never).
    """

    token_id: str
    role: Role
    node: str | None
    credential: str | None = None
    expires_at: float | None = None

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


class Admission(enum.Enum):
    """What the caches alone say of a presented text (Tokens.admission)."""

    KNOWN = "known"  # it checked out recently: a real worker (the request still checks it properly)
    UNKNOWN = "unknown"  # never seen: the live ids, then the store, say
    REFUSED = "refused"  # absent, malformed, or found unusable: refuse without asking the store


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `15m`, `12h`, `30d`, `2w` (a bare number is seconds)."""
    match = _DURATION.match(text.strip())
    if not match or float(match["amount"]) <= 0:
        raise ConfigError(f"duration {text!r} is invalid: give a positive number with s, m, h, d or w (e.g. 30d)")
    return float(match["amount"]) * _UNIT_S[match["unit"]]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class _Bounded(OrderedDict[str, Any]):
    """A dict that forgets its oldest entries beyond CACHE_MAX (so a flood of distinct texts is bounded)."""

    def remember(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > CACHE_MAX:
            self.popitem(last=False)


class Tokens:
    """Named operations on the API tokens of one store (clock: epoch seconds, injectable)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        cache_s: float = 0.0,
        negative_cache_s: float = 0.0,
    ) -> None:
        self.store = store
        self.clock = clock
        self.cache_s = cache_s
        self.negative_cache_s = negative_cache_s
        self._checked = _Bounded()  # digest -> (checked at, expiry, principal)
        self._refused = _Bounded()  # digest -> (refused until, the error)
        self.lookups = 0  # store lookups of presented texts (for tests and metrics)
        self.id_reads = 0  # reads of the live ids (for tests)
        # The ids of the live tokens and credentials, read at `_ids_at` (clock time; -inf: never): a text whose
        # id is not among them, in a read begun after it was presented, is refused without a lookup (server.gate).
        self._ids: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())
        self._ids_at = -math.inf

    # --- tokens -----------------------------------------------------------------------------

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
        with self.store.transaction() as conn:
            return self._insert(conn, role, node, None if expires_s is None else self.clock() + expires_s, note)

    def _insert(
        self, conn: Any, role: Role, node: str | None, expires_at: float | None, note: str | None
    ) -> tuple[str, dict[str, Any]]:
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = {
            "id": token_id,
            "secret_sha256": _digest(secret),
            "role": role.value,
            "node": node,
            "note": note,
            "created_at": self.clock(),
            "expires_at": expires_at,
            "revoked_at": None,
            "last_used_at": None,
        }
        queries.insert_token(conn, row)
        return f"zl_{token_id}_{secret}", row

    def rotate(self, token_id: str, *, grace_s: float) -> tuple[str, dict[str, Any]]:
        """Replace a token: a new one with its role, node, note and expiry, printed once; the old one keeps
        working for `grace_s` seconds more (0: stops now), so running workers switch without a gap."""
        if grace_s < 0:
            raise ConfigError("the grace period cannot be negative")
        with self.store.transaction() as conn:
            old = queries.get_token(conn, token_id)
            if old is None or old["revoked_at"] is not None:
                raise ConfigError(f"no unrevoked token {token_id!r}: see `zeroloop tokens ls`")
            now = self.clock()
            if old["expires_at"] is not None and old["expires_at"] <= now:
                raise ConfigError(f"token {token_id} has expired: create a new one instead")
            note = f"rotated from {token_id}" + (f": {old['note']}" if old["note"] else "")
            made = self._insert(conn, Role(old["role"]), old["node"], old["expires_at"], note[:200])
            queries.expire_token(conn, token_id, now + grace_s)
        return made

    def list(self) -> list[dict[str, Any]]:
        """Every token's row (hashes included; never a secret), oldest first."""
        with self.store.read() as conn:
            return queries.list_tokens(conn)

    def revoke(self, token_id: str) -> None:
        """Revoke a token at once, and every credential issued under it; ConfigError when there is no live one."""
        with self.store.transaction() as conn:
            if not queries.revoke_token(conn, token_id, self.clock()):
                raise ConfigError(f"no unrevoked token {token_id!r}: see `zeroloop tokens ls`")

    def any_usable(self) -> bool:
        """Whether at least one token is neither revoked nor expired (asked of the store every time: the
        first token created closes the loopback trust at once)."""
        with self.store.read() as conn:
            return queries.count_usable(conn, self.clock()) > 0

    # --- credentials --------------------------------------------------------------------------

    def remember_issued(self, credential_id: str) -> None:
        """Count a credential this process issued among the live ids at once."""
        self._ids = (self._ids[0], self._ids[1] | {credential_id})

    def issue_credential(self, principal: Principal, lifetime_s: float) -> tuple[str, float]:
        """A fresh credential for a worker principal's node, living `lifetime_s` seconds: (its text, expiry).

        Its node's long-expired credentials are deleted in the same transaction, so they do not pile up.
        """
        if principal.role is not Role.WORKER or principal.node is None:
            raise Forbidden(f"token {principal.token_id} is a {principal.role.value} token: only worker tokens "
                            "are exchanged for credentials")  # fmt: skip
        credential_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = self.clock()
        expires_at = now + lifetime_s
        with self.store.transaction() as conn:
            queries.delete_expired_credentials(conn, principal.node, now - lifetime_s)
            queries.insert_credential(
                conn,
                {
                    "id": credential_id,
                    "token_id": principal.token_id,
                    "node": principal.node,
                    "secret_sha256": _digest(secret),
                    "issued_at": now,
                    "expires_at": expires_at,
                },
            )
        self.remember_issued(credential_id)
        return f"zlc_{credential_id}_{secret}", expires_at

    # --- checking -------------------------------------------------------------------------------

    def principal(self, presented: str | None, *, loopback: bool, trust_machine: bool = False) -> Principal:
        """Who a request presenting `presented` (or nothing) speaks for: LOCAL on a `loopback` server while no
        token is usable at all (asked of the store each time), or whatever tokens exist on a loopback server
        that `trust_machine` (the quickstart's own); else the checked token (AuthError)."""
        if not presented and loopback and (trust_machine or not self.any_usable()):
            return LOCAL
        return self.check(presented)

    def admission(self, presented: str | None) -> tuple[Admission, tuple[type[AuthError], str] | None]:
        """What the caches alone say of `presented`, without the store: refused (with the error class and
        message to answer), known (it checked out within KNOWN_S), or unknown."""
        if not presented:
            return Admission.REFUSED, _NO_TOKEN
        if _FORMAT.match(presented) is None:
            return Admission.REFUSED, _MALFORMED
        digest = _digest(presented)
        now = self.clock()
        refused = self._refused.get(digest)
        if refused is not None and refused[0] > now:
            return Admission.REFUSED, refused[1]
        checked = self._checked.get(digest)
        if checked is not None and now - checked[0] < KNOWN_S and (checked[1] is None or checked[1] > now):
            return Admission.KNOWN, None
        return Admission.UNKNOWN, None

    def may_exist(self, presented: str) -> bool:
        """Whether the id of a well-formed text is among the live ids last read (`refresh_ids`)."""
        kind, token_id = presented[: presented.index("_")], presented.split("_", 2)[1]
        return token_id in self._ids[1 if kind == "zlc" else 0]

    def refresh_ids(self, *, within_s: float = IDS_FRESH_S) -> None:
        """Read the ids of every token and of the live credentials again, unless read within `within_s` seconds."""
        now = self.clock()
        if now - self._ids_at < within_s:
            return
        self._ids_at = now
        self.id_reads += 1
        with self.store.read() as conn:
            token_ids, credential_ids = queries.live_ids(conn, now)
        self._ids = (frozenset(token_ids), frozenset(credential_ids))

    def check(self, presented: str | None) -> Principal:
        """The principal of a presented token or credential; AuthError (never echoing the secret) when it is not
        usable (TokenRevoked when it, or the token it was issued under, was revoked)."""
        if not presented:
            raise _NO_TOKEN[0](_NO_TOKEN[1])
        match = _FORMAT.match(presented)
        if match is None:
            raise _MALFORMED[0](_MALFORMED[1])
        now = self.clock()
        digest = _digest(presented)
        cached = self._checked.get(digest)
        if cached is not None and now - cached[0] < self.cache_s and (cached[1] is None or cached[1] > now):
            return cached[2]  # type: ignore[no-any-return]
        refused = self._refused.get(digest)
        if refused is not None and refused[0] > now:
            raise refused[1][0](refused[1][1])
        try:
            principal = self._look_up(match, now)
        except _Expired as exc:
            raise AuthError(str(exc)) from None
        except AuthError as exc:
            if self.negative_cache_s > 0:
                self._refused.remember(digest, (now + self.negative_cache_s, _refusal(exc)))
            raise
        if self.cache_s > 0 or self.negative_cache_s > 0:
            self._checked.remember(digest, (now, principal.expires_at, principal))
        return principal

    def _look_up(self, match: re.Match[str], now: float) -> Principal:
        self.refresh_ids()
        self.lookups += 1
        if match["kind"] == "zlc":
            return self._credential(match["id"], match["secret"], now)
        token_id = match["id"]
        with self.store.read() as conn:
            row = queries.get_token(conn, token_id)
        # Compare against a dummy hash when the id is unknown, so both paths take the same time.
        stored = row["secret_sha256"] if row else "0" * 64
        if not hmac.compare_digest(stored, _digest(match["secret"])) or row is None:
            raise not_valid("zl", token_id)
        if row["revoked_at"] is not None:
            raise TokenRevoked(f"token {token_id} was revoked: ask for a new one")
        if row["expires_at"] is not None and row["expires_at"] <= now:
            raise _Expired(f"token {token_id} expired: ask for a new one")
        if row["last_used_at"] is None or now - row["last_used_at"] >= TOUCH_EVERY_S:
            with self.store.transaction() as conn:
                queries.touch_token(conn, token_id, now)
        return Principal(token_id, Role(row["role"]), row["node"], expires_at=row["expires_at"])

    def _credential(self, credential_id: str, secret: str, now: float) -> Principal:
        with self.store.read() as conn:
            row = queries.get_credential(conn, credential_id)
        stored = row["secret_sha256"] if row else "0" * 64
        if not hmac.compare_digest(stored, _digest(secret)) or row is None:
            raise not_valid("zlc", credential_id)
        if row["token_revoked_at"] is not None:
            raise TokenRevoked(f"credential {credential_id} was issued under token {row['token_id']}, which was "
                               "revoked: this worker may no longer act")  # fmt: skip
        if row["expires_at"] <= now:
            raise _Expired(f"credential {credential_id} expired: the worker exchanges its token again")
        return Principal(row["token_id"], Role.WORKER, row["node"], credential_id, row["expires_at"])


def not_valid(kind: str, text_id: str) -> AuthError:
    """The refusal of a token ("zl") or credential ("zlc") with this id whose secret does not match, or that
    does not exist (the same words either way)."""
    if kind == "zlc":
        return AuthError(f"credential {text_id} is not valid: the worker exchanges its token again")
    return AuthError(f"token {text_id} is not valid: check ZEROLOOP_SERVER__TOKEN")


class _Expired(AuthError):
    """An expiry, raised as a plain AuthError: honoured exactly, so never remembered as a refusal."""


def _refusal(error: AuthError) -> tuple[type[AuthError], str]:
    """What is remembered of a refusal: a fresh exception is raised from it each time (none grows a traceback)."""
    return type(error), str(error)


_NO_TOKEN = (AuthError, "no token: send `Authorization: Bearer <token>` (see `zeroloop tokens create`)")
_MALFORMED = (
    AuthError,
    "malformed token: expected zl_<id>_<secret> or zlc_<id>_<secret> from `zeroloop tokens create`",
)
