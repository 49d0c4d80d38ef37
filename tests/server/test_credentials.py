"""Short-lived node-bound credentials, rotation, revocation that stops a worker, expiry, TLS that says what is off."""

from __future__ import annotations

import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.helpers import FakeClock
from tests.server.conftest import register_node, running_server
from zeroloop.app import App
from zeroloop.config import ServerSettings, Settings, StoreSettings
from zeroloop.control.tokens import Role, Tokens
from zeroloop.errors import AuthError, ConfigError, Forbidden, TokenRevoked
from zeroloop.remote import wire
from zeroloop.remote.client import ServerClient
from zeroloop.server.serve import uvicorn_options
from zeroloop.store.database import Store
from zeroloop.store.schema import credentials

# --- the tokens themselves -----------------------------------------------------------------------


def test_a_credential_acts_as_its_node_only_and_expires_exactly(store: Store, clock: FakeClock) -> None:
    tokens = Tokens(store, clock=clock)
    text, _row = tokens.create(Role.WORKER, node="w1")
    credential, expires_at = tokens.issue_credential(tokens.check(text), 60.0)
    assert credential.startswith("zlc_") and expires_at == clock.now + 60
    who = tokens.check(credential)
    assert who.node == "w1" and who.credential is not None and who.role is Role.WORKER
    who.may_act_as("w1")
    with pytest.raises(Forbidden, match="not as 'w2'"):
        who.may_act_as("w2")
    clock.advance(60.0)
    with pytest.raises(AuthError, match="expired") as raised:
        tokens.check(credential)
    assert not isinstance(raised.value, TokenRevoked)
    admin = tokens.check(tokens.create(Role.ADMIN)[0])
    with pytest.raises(Forbidden, match="only worker tokens"):
        tokens.issue_credential(admin, 60.0)


def test_revoking_a_token_revokes_its_credentials_as_token_revoked(store: Store, clock: FakeClock) -> None:
    tokens = Tokens(store, clock=clock)
    text, row = tokens.create(Role.WORKER, node="w1")
    credential, _ = tokens.issue_credential(tokens.check(text), 600.0)
    tokens.revoke(row["id"])
    for presented in (text, credential):
        with pytest.raises(TokenRevoked, match="revoked"):
            tokens.check(presented)


def test_rotation_gives_a_new_secret_and_the_old_one_works_for_the_grace_only(store: Store, clock: FakeClock) -> None:
    tokens = Tokens(store, clock=clock)
    old, row = tokens.create(Role.WORKER, node="w1", note="gpu box")
    running, _ = tokens.issue_credential(tokens.check(old), 7200.0)  # a worker that is running
    new, new_row = tokens.rotate(row["id"], grace_s=3600.0)
    assert new != old and new_row["node"] == "w1" and new_row["role"] == "worker"
    assert new_row["note"] == f"rotated from {row['id']}: gpu box"
    clock.advance(3599.0)
    tokens.check(old)
    clock.advance(2.0)
    with pytest.raises(AuthError, match="expired"):
        tokens.check(old)
    assert tokens.check(new).node == "w1"
    assert tokens.check(running).node == "w1"  # running workers keep going on their credentials
    with pytest.raises(ConfigError, match="has expired"):
        tokens.rotate(row["id"], grace_s=0)


def test_a_bad_token_costs_one_store_lookup_then_none(store: Store, clock: FakeClock) -> None:
    tokens = Tokens(store, clock=clock, negative_cache_s=60.0)
    bogus = "zl_0123456789ab_" + "x" * 43
    for _ in range(50):
        with pytest.raises(AuthError, match="not valid"):
            tokens.check(bogus)
    assert tokens.lookups == 1
    clock.advance(61.0)
    with pytest.raises(AuthError):
        tokens.check(bogus)
    assert tokens.lookups == 2


# --- through the server ----------------------------------------------------------------------------


@pytest.fixture
def cluster(store_url: str, tmp_path: Path, settings: Settings) -> Iterator[tuple[App, FakeClock]]:
    """An App on real time (a FakeClock starting now), whose server checks the store for every token."""
    clock = FakeClock(time.time())
    server = ServerSettings(token_cache_s=0, credential_s=100.0)
    app = App(Settings(data_dir=tmp_path / "data", store=StoreSettings(url=store_url), server=server), clock=clock)
    with app:
        register_node(app, "w1")
        yield app, clock


def test_a_worker_exchanges_its_token_and_refreshes_its_credential_as_it_heartbeats(
    cluster: tuple[App, FakeClock],
) -> None:
    app, clock = cluster
    token, row = Tokens(app.store).create(Role.WORKER, node="w1")
    with running_server(app) as url:
        client = ServerClient(ServerSettings(url=url, token=token), "w1", credentials=True)
        try:
            assert client.call("GET", "/models/production") == {"models": {}}
            first = client._presented()
            assert first is not None and first.startswith("zlc_")
            clock.advance(40.0)  # not yet half its life: the heartbeat brings nothing new
            client.call("POST", "/heartbeat", json={"utilisation": {}})
            assert client._presented() == first
            clock.advance(20.0)  # past half its life: the heartbeat's answer carries the next one
            client.call("POST", "/heartbeat", json={"utilisation": {}})
            second = client._presented()
            assert second is not None and second.startswith("zlc_") and second != first
            clock.advance(500.0)  # asleep past its life: it is refused, and the token gets a new one
            assert client.call("GET", "/models/production") == {"models": {}}
            assert client._presented() not in (first, second, token)
            Tokens(app.store).revoke(row["id"])
            with pytest.raises(TokenRevoked, match="revoked"):
                client.call("GET", "/models/production")
        finally:
            client.close()
    with app.store.read() as conn:
        # each exchange deletes its node's long-expired credentials: they do not pile up
        assert conn.execute(sa.select(sa.func.count()).select_from(credentials)).scalar_one() == 1


def test_an_admin_token_keeps_presenting_itself(cluster: tuple[App, FakeClock]) -> None:
    app, _clock = cluster
    token, _ = Tokens(app.store).create(Role.ADMIN)
    with running_server(app) as url:
        client = ServerClient(ServerSettings(url=url, token=token), "w1", credentials=True)
        try:
            assert client.call("GET", "/models/production") == {"models": {}}
            assert client._presented() == token
        finally:
            client.close()


def _certificate(folder: Path, name: str, *, ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (self-signed, or signed by `ca`): (certificate, key)."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subject = ["-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"]
    if ca is None:
        argv = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject]
        subprocess.run([*argv, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
        return cert, key
    request = folder / f"{name}.csr"
    argv = ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}"]
    subprocess.run([*argv, "-keyout", str(key), "-out", str(request)], check=True, capture_output=True, timeout=60)
    sign = ["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-days", "1"]
    subprocess.run([*sign, "-CAcreateserial", "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def test_a_certificate_for_another_name_says_so(app: App, tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path, "server")
    options = uvicorn_options(
        Settings(data_dir=tmp_path, server=ServerSettings(tls_certfile=cert, tls_keyfile=key)), "127.0.0.1", 0
    )
    with running_server(app, loopback=True, options=options) as url:
        port = url.rsplit(":", 1)[1]
        good = ServerClient(ServerSettings(url=url, ca_file=cert, retry_attempts=1), "w1")
        wrong = ServerClient(ServerSettings(url=f"https://localhost:{port}", ca_file=cert, retry_attempts=1), "w1")
        try:
            assert good.call("GET", "/models/production") == {"models": {}}
            with pytest.raises(ConfigError, match="issued for other names") as raised:
                wrong.call("GET", "/models/production")
            assert "server.ca_file" not in str(raised.value)  # it is not the CA's fault
        finally:
            good.close()
            wrong.close()


def test_mutual_tls_refuses_a_worker_without_a_certificate_its_ca_signed(app: App, tmp_path: Path) -> None:
    server_cert, server_key = _certificate(tmp_path, "server")
    ca = _certificate(tmp_path, "workers-ca")
    worker_cert, worker_key = _certificate(tmp_path, "gpu-01", ca=ca)
    stranger_cert, stranger_key = _certificate(tmp_path, "stranger")
    served = ServerSettings(tls_certfile=server_cert, tls_keyfile=server_key, tls_client_ca=ca[0])
    options = uvicorn_options(Settings(data_dir=tmp_path, server=served), "127.0.0.1", 0)
    assert options["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    with running_server(app, loopback=True, options=options) as url:
        base = {"url": url, "ca_file": server_cert, "retry_attempts": 2, "retry_initial_s": 0.0}
        signed = ServerClient(
            ServerSettings(**base, tls_client_certfile=worker_cert, tls_client_keyfile=worker_key), "w1"
        )
        bare = ServerClient(ServerSettings(**base), "w1")
        foreign = ServerClient(
            ServerSettings(**base, tls_client_certfile=stranger_cert, tls_client_keyfile=stranger_key), "w1"
        )
        try:
            assert signed.call("GET", "/models/production") == {"models": {}}
            # Refused in the handshake: OpenSSL names the missing certificate (ConfigError saying what to set)
            # when the server's alert arrives before its close, else the connection just ends (retried, then
            # ServerUnavailable). Either way no request got through.
            for refused in (bare, foreign):
                with pytest.raises((wire.ServerUnavailable, ConfigError)) as raised:
                    refused.call("GET", "/models/production")
                if isinstance(raised.value, ConfigError):
                    assert "tls_client_certfile" in str(raised.value)
        finally:
            for client in (signed, bare, foreign):
                client.close()


@pytest.mark.parametrize("trusted", [True, False])
def test_forwarded_headers_from_a_trusted_proxy_make_the_login_cookie_secure(
    app: App, tmp_path: Path, trusted: bool
) -> None:
    viewer, _ = Tokens(app.store).create(Role.VIEWER)
    proxy = ServerSettings(forwarded_allow_ips="127.0.0.1" if trusted else None)
    options = uvicorn_options(Settings(data_dir=tmp_path, server=proxy), "127.0.0.1", 0)
    with running_server(app, options=options) as url:
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        answer = httpx.post(f"{url}/login", data={"token": viewer}, headers=forwarded, timeout=30)
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"].lower()
    assert ("secure" in cookie) is trusted  # an untrusted proxy's word changes nothing
