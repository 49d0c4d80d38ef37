"""API tokens: stored hashed, checked in constant time, refused when missing, wrong, expired or revoked."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FakeClock
from zeroloop.control import tokens as tokens_module
from zeroloop.control.tokens import Admission, Role, Tokens, parse_duration
from zeroloop.errors import AuthError, ConfigError, Forbidden
from zeroloop.store.database import Store


def test_a_token_is_stored_only_as_the_hash_of_its_secret(store: Store) -> None:
    tokens = Tokens(store)
    text, row = tokens.create(Role.WORKER, node="w1")
    secret = text.split("_", 2)[2]
    assert row["secret_sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    listed = tokens.list()
    assert [entry["id"] for entry in listed] == [row["id"]]
    assert all(secret not in str(value) for value in listed[0].values())
    principal = tokens.check(text)
    assert (principal.token_id, principal.role, principal.node) == (row["id"], Role.WORKER, "w1")


@pytest.mark.parametrize(
    "presented, reason",
    [
        (None, "no token"),
        ("", "no token"),
        ("Bearer nonsense", "malformed"),
        ("zl_0123456789ab_" + "x" * 43, "not valid"),
    ],
)
def test_missing_malformed_and_unknown_tokens_are_refused(store: Store, presented: str | None, reason: str) -> None:
    Tokens(store).create(Role.ADMIN)
    with pytest.raises(AuthError, match=reason):
        Tokens(store).check(presented)


def test_a_wrong_secret_for_a_real_id_is_refused_without_echoing_it(store: Store) -> None:
    text, row = Tokens(store).create(Role.ADMIN)
    wrong = f"zl_{row['id']}_" + "A" * 43
    with pytest.raises(AuthError) as raised:
        Tokens(store).check(wrong)
    assert "A" * 10 not in str(raised.value) and "not valid" in str(raised.value)
    assert text.split("_", 2)[2] not in str(raised.value)


def test_expired_and_revoked_tokens_are_refused(store: Store, clock: FakeClock) -> None:
    tokens = Tokens(store, clock=clock)
    short, _ = tokens.create(Role.VIEWER, expires_s=60)
    revoked, row = tokens.create(Role.VIEWER)
    assert tokens.check(short).role is Role.VIEWER
    clock.advance(61)
    with pytest.raises(AuthError, match="expired"):
        tokens.check(short)
    tokens.revoke(row["id"])
    with pytest.raises(AuthError, match="revoked"):
        tokens.check(revoked)
    with pytest.raises(ConfigError, match="no unrevoked token"):
        tokens.revoke(row["id"])
    assert not tokens.any_usable()


def test_a_server_trusts_a_checked_token_for_cache_s_and_no_longer(store: Store, clock: FakeClock) -> None:
    served = Tokens(store, clock=clock, cache_s=5.0)
    admin = Tokens(store, clock=clock)
    text, row = admin.create(Role.WORKER, node="w1", expires_s=8)
    assert served.check(text).node == "w1"
    admin.revoke(row["id"])
    clock.advance(4)
    assert served.check(text).node == "w1"  # within cache_s: the store is not asked again
    with pytest.raises(AuthError, match="not valid"):  # a wrong secret never matches a remembered token
        served.check(text[:-4] + "AAAA")
    clock.advance(1.5)
    with pytest.raises(AuthError, match="revoked"):  # after cache_s the revocation holds
        served.check(text)
    fresh, _ = admin.create(Role.WORKER, node="w1", expires_s=2)
    assert served.check(fresh).node == "w1"
    clock.advance(2)
    with pytest.raises(AuthError, match="expired"):  # an expiry is exact, remembered or not
        served.check(fresh)


def test_the_remembered_tokens_are_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens_module, "CACHE_MAX", 2)
    served = Tokens(store, cache_s=60.0, negative_cache_s=60.0)
    texts = [Tokens(store).create(Role.VIEWER)[0] for _ in range(3)]
    for text in texts[:2]:
        served.check(text)
    assert len(served._checked) == 2
    served.check(texts[2])  # a third would exceed the bound: the oldest is forgotten
    assert len(served._checked) == 2
    assert served.admission(texts[0])[0] is Admission.UNKNOWN and served.admission(texts[2])[0] is Admission.KNOWN
    for n in range(5):  # bad texts are bounded alike
        with pytest.raises(AuthError):
            served.check(f"zl_0123456789a{n}_{'x' * 43}")
    assert len(served._refused) == 2


def test_a_worker_token_acts_only_as_its_own_node_and_a_viewer_not_at_all(store: Store) -> None:
    tokens = Tokens(store)
    worker = tokens.check(tokens.create(Role.WORKER, node="w1")[0])
    worker.may_act_as("w1")
    with pytest.raises(Forbidden, match="not as 'w2'"):
        worker.may_act_as("w2")
    viewer = tokens.check(tokens.create(Role.VIEWER)[0])
    with pytest.raises(Forbidden, match="viewer token"):
        viewer.may_act_as("w1")
    tokens.check(tokens.create(Role.ADMIN)[0]).may_act_as("anything")


def test_bad_create_arguments_are_refused_and_store_nothing(store: Store) -> None:
    tokens = Tokens(store)
    with pytest.raises(ConfigError, match="--node"):
        tokens.create(Role.WORKER)
    with pytest.raises(ConfigError, match="only worker tokens"):
        tokens.create(Role.ADMIN, node="w1")
    assert tokens.list() == []


@pytest.mark.parametrize(
    "text, seconds", [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("12h", 43200.0), ("2d", 172800.0)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "3 years", "h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(text)


def test_the_cli_creates_lists_and_revokes_and_prints_the_secret_once(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ZEROLOOP_")}
    env.update({"ZEROLOOP_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"})

    def zeroloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zeroloop", *args], env=env, cwd=tmp_path, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip

    refused = zeroloop("serve", "--host", "0.0.0.0", "--port", "1")
    assert refused.returncode == 2 and "no usable token" in refused.stderr and "tokens create" in refused.stderr
    created = zeroloop("tokens", "create", "--role", "worker", "--node", "w1", "--expires", "30d")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("zl_")
    token_id = secret.split("_")[1]
    listed = zeroloop("tokens", "ls")
    assert token_id in listed.stdout and "worker" in listed.stdout and secret.split("_", 2)[2] not in listed.stdout
    env["ZEROLOOP_SERVER__TOKEN"] = secret
    config = zeroloop("config", "--json")
    del env["ZEROLOOP_SERVER__TOKEN"]
    assert config.returncode == 0 and '"token": "**********"' in config.stdout
    assert secret.split("_", 2)[2] not in config.stdout
    bad = zeroloop("tokens", "create", "--role", "worker")
    assert bad.returncode == 2 and "--node" in bad.stderr
    assert zeroloop("tokens", "revoke", token_id).returncode == 0
    again = zeroloop("tokens", "revoke", token_id)
    assert again.returncode == 2 and "no unrevoked token" in again.stderr
