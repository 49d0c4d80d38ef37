"""The dashboard's JSON API and its admin actions over a real server: the store's numbers, who may read and act."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.server.conftest import running_server
from tests.server.observed import (
    DAEMON_ERROR,
    DEAD_ERROR,
    DECISION_REASON,
    KEY,
    LETTER_ERROR,
    NODE,
    Observed,
    populate,
)
from zeroloop.app import App
from zeroloop.cluster.nodes import NodeStatus
from zeroloop.control.tokens import Role, Tokens
from zeroloop.queue.jobs import JobStatus
from zeroloop.server.access import COOKIE
from zeroloop.server.api import create_api
from zeroloop.store.queries import pipelines as pipeline_queries


@dataclass
class Dash:
    """A test client of a server treated as bound off loopback, what the store holds, and one token per role."""

    app: App
    client: httpx.Client
    seen: Observed
    worker: str
    viewer: str
    admin: str


def bearer(token: str) -> dict[str, str]:
    """The header that presents `token`."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def dash(app: App) -> Iterator[Dash]:
    seen = populate(app)
    tokens = Tokens(app.store)
    worker = tokens.create(Role.WORKER, node=NODE)[0]
    viewer = tokens.create(Role.VIEWER)[0]
    admin = tokens.create(Role.ADMIN)[0]
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield Dash(app, client, seen, worker, viewer, admin)


def _paused(app: App) -> bool:
    with app.store.read() as conn:
        state = pipeline_queries.get_pipeline(conn, KEY)
    assert state is not None
    return bool(state["paused"])


def test_the_json_api_serves_what_the_store_holds(dash: Dash) -> None:
    get = lambda path: dash.client.get(path, headers=bearer(dash.viewer))  # noqa: E731
    (pipeline,) = get("/api/pipelines").json()
    assert (pipeline["config_key"], pipeline["samples_total"], pipeline["games_total"]) == (KEY, 5000, 321)
    assert pipeline["model_id"] == dash.seen.second_model and pipeline["training"]["loss"] == dash.seen.loss
    assert pipeline["rating"]["elo"] == dash.app.models.get(dash.seen.second_model).elo
    detail = get(f"/api/pipelines/{KEY}").json()
    assert [point["model_id"] for point in detail["elo_history"]] == [dash.seen.first_model, dash.seen.second_model]
    assert all(point["half_width"] > 0 for point in detail["elo_history"])
    (decision,) = detail["decisions"]
    assert (decision["outcome"], decision["evidence"]["reason"]) == ("promoted", DECISION_REASON)
    assert get("/api/decisions").json() == detail["decisions"]
    (daemon,) = get("/api/daemons").json()
    assert (daemon["node"], daemon["state"], daemon["restarts"], daemon["last_error"]) == (
        NODE, "backoff", 3, DAEMON_ERROR,
    )  # fmt: skip
    models = {model["id"]: model for model in get("/api/models").json()}
    assert models[dash.seen.second_model]["parent_id"] == dash.seen.first_model
    assert models[dash.seen.second_model]["stage"] == "production"
    (node,) = get("/api/nodes").json()
    assert (node["id"], node["status"], node["utilisation"]["cpu_pct"], node["cost_per_hour"]) == (
        NODE, "active", 42.0, 1.5,
    )  # fmt: skip
    queue = get("/api/queue").json()
    assert queue["counts"]["train"]["dead"] == 1
    assert [(job["id"], job["error"]) for job in queue["dead_jobs"]] == [(dash.seen.dead_job, DEAD_ERROR)]
    assert [(letter["id"], letter["error"]) for letter in queue["dead_letters"]] == [(dash.seen.letter, LETTER_ERROR)]
    paused = get(f"/api/events?type=PIPELINE_PAUSED&config={KEY}").json()
    assert [event["payload"]["reason"] for event in paused] == ["system health"]
    assert get("/api/events?type=NO_SUCH_TYPE").status_code == 422
    alerts = get("/api/alerts").json()
    assert any(alert["rule"] == "pipeline_paused" and KEY in alert["summary"] for alert in alerts)
    health = get("/api/health").json()
    assert 0.0 <= health["score"] <= 1.0 and health["level"] == dash.app.health.assess().level.value
    overview = get("/api/overview").json()
    assert overview["nodes"] == {"active": 1} and overview["cost_per_hour"] == 1.5


def test_reading_needs_a_viewer_token_off_loopback(dash: Dash) -> None:
    assert dash.client.get("/api/pipelines").status_code == 401
    assert dash.client.get("/api/pipelines", headers=bearer(dash.worker)).status_code == 403
    assert dash.client.get("/api/pipelines", headers=bearer(dash.admin)).status_code == 200
    assert dash.client.get("/metrics").status_code == 401
    page = dash.client.get("/dashboard")
    assert page.status_code == 401 and 'name="token"' in page.text  # the login form, not the data
    assert KEY not in page.text


def test_an_admin_action_is_refused_without_an_admin_token_and_works_with_one(dash: Dash) -> None:
    for headers in ({}, bearer(dash.viewer), bearer(dash.worker)):
        refused = dash.client.post(f"/api/pipelines/{KEY}/pause", headers=headers)
        assert refused.status_code in (401, 403), refused.text
    assert dash.client.post(f"/api/pipelines/{KEY}/pause", headers=bearer(dash.viewer)).status_code == 403
    assert not _paused(dash.app)
    done = dash.client.post(f"/api/pipelines/{KEY}/pause", headers=bearer(dash.admin))
    assert done.status_code == 200 and done.json() == {"message": f"{KEY}: paused"}
    assert _paused(dash.app)
    assert dash.client.post(f"/api/pipelines/{KEY}/resume", headers=bearer(dash.admin)).status_code == 200
    assert not _paused(dash.app)
    retried = dash.client.post(f"/api/jobs/{dash.seen.dead_job}/retry", headers=bearer(dash.admin))
    assert retried.status_code == 200 and dash.app.queue.get(dash.seen.dead_job).status is JobStatus.QUEUED
    letter = dash.client.post(f"/api/dead-letters/{dash.seen.letter}/retry", headers=bearer(dash.admin))
    assert letter.status_code == 200 and "due now" in letter.json()["message"]
    back = dash.client.post(f"/api/pipelines/{KEY}/rollback", headers=bearer(dash.admin))
    assert back.status_code == 200 and dash.app.models.production(KEY).id == dash.seen.first_model  # type: ignore[union-attr]
    again = dash.client.post(f"/api/models/{dash.seen.second_model}/promote", headers=bearer(dash.admin))
    assert again.status_code == 200 and dash.app.models.production(KEY).id == dash.seen.second_model  # type: ignore[union-attr]
    unknown = dash.client.post("/api/pipelines/no_such_game_2p/pause", headers=bearer(dash.admin))
    assert unknown.status_code == 400 and "no pipeline" in unknown.json()["detail"]


def test_browser_forms_act_through_the_login_cookie(dash: Dash) -> None:
    drain = f"/dashboard/actions/nodes/{NODE}/drain"
    assert dash.client.get("/login?token=zl_0123456789ab_" + "x" * 43).status_code == 401
    assert dash.client.get(f"/login?token={dash.worker}").status_code == 401  # a worker token does not log in
    login = dash.client.get(f"/login?token={dash.viewer}")
    assert login.status_code == 303 and login.cookies.get(COOKIE) == dash.viewer
    assert (
        "httponly" in login.headers["set-cookie"].lower() and "samesite=strict" in login.headers["set-cookie"].lower()
    )
    dash.client.cookies.set(COOKIE, dash.viewer)
    assert dash.client.get("/dashboard").status_code == 200
    missing = dash.client.get("/dashboard/pipelines/no_such_game_2p")
    assert missing.status_code == 404 and "no pipeline &#39;no_such_game_2p&#39;" in missing.text
    assert "<h1>not shown</h1>" in missing.text  # the page, not the API's JSON
    unknown = dash.client.get("/dashboard/events?type=NO_SUCH_TYPE")
    assert unknown.status_code == 422 and "unknown event type" in unknown.text
    refused = dash.client.post(drain)
    assert refused.status_code == 403 and "needs an admin token" in refused.text
    assert dash.app.nodes.get(NODE)["status"] == NodeStatus.ACTIVE.value  # type: ignore[index]
    form = dash.client.post(
        "/login", content=f"token={dash.admin}", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert form.status_code == 303
    dash.client.cookies.set(COOKIE, dash.admin)
    done = dash.client.post(drain)
    assert done.status_code == 303 and done.headers["location"].startswith("/dashboard/nodes?message=")
    assert dash.app.nodes.get(NODE)["status"] == NodeStatus.DRAINING.value  # type: ignore[index]


def test_loopback_without_tokens_is_open_and_with_tokens_is_not(app: App) -> None:
    populate(app)
    with running_server(app, loopback=True) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/api/nodes").status_code == 200
        assert client.post(f"/api/pipelines/{KEY}/pause").status_code == 200
        assert _paused(app)
        assert (
            client.post(
                f"/api/pipelines/{KEY}/resume",
                headers={"Origin": client.base_url.scheme + "://" + client.base_url.netloc.decode()},
            ).status_code
            == 200
        )  # from the server's own pages
        for header in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            refused = client.post(f"/dashboard/actions/pipelines/{KEY}/pause", headers=header)
            assert refused.status_code == 403 and "another site" in refused.text
            assert client.post(f"/api/pipelines/{KEY}/pause", headers=header).status_code == 403
        assert not _paused(app)
        Tokens(app.store).create(Role.VIEWER)
        assert client.get("/api/nodes").status_code == 401


def test_a_login_link_leaves_no_token_in_the_access_log(app: App) -> None:
    create_api(app)
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/login?token=zl_0123456789ab_secretsecretsecretsecret&x=1", "1.1", 303), None,
    )  # fmt: skip
    assert logging.getLogger("uvicorn.access").filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /login?token=[redacted]&x=1 HTTP/1.1" 303'
