"""The web dashboard of `zeroloop serve`: HTML pages rendered on the server, and their admin forms.

Pages (viewer token off loopback): the overview (health and why, pipelines, jobs, nodes,
recent alerts), one pipeline (Elo over time as an SVG chart with its interval, training,
decisions with evidence), the model registry with lineage, the queue with dead jobs and
dead letters, nodes and daemons, and the recent events filtered by type and config key.
Forms post to `/dashboard/actions/...` (admin token) and redirect back with a message.
Browsers log in once at `/login`, which keeps the token in an HttpOnly, SameSite=Strict
cookie; the strict cookie is what keeps another site from posting these forms.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from zeroloop.app import App
from zeroloop.control import actions, views
from zeroloop.control.tokens import Principal, Role
from zeroloop.errors import AuthError, Forbidden, ZeroloopError
from zeroloop.events.catalogue import EVENT_TYPES
from zeroloop.server import access, charts, population_chart

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)
_COOKIE_MAX_AGE_S = 7 * 86400
REFRESH_S = 15
"""The overview and pipeline pages reload themselves this often (seconds), so a tab watches the loop learn."""


_TOKEN_QUERY = re.compile(r"(token=)[^&\s]+")


class RedactTokenQuery(logging.Filter):
    """Hides the token of a `/login?token=...` link in uvicorn's access log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's arguments; never drop the record."""
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_QUERY.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


class LoginRequired(Exception):
    """A page was asked for without a usable viewer token: the handler answers with the login form."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _ago(epoch: float | None) -> str:
    return "-" if epoch is None else f"{max(0.0, time.time() - epoch):.0f} s ago"


_TEMPLATES.filters["when"] = _when
_TEMPLATES.filters["ago"] = _ago
_TEMPLATES.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=1, sort_keys=True, default=str)


def _zl(request: Request) -> App:
    app: App = request.app.state.zl
    return app


def _who(request: Request, check: Callable[[Request], Principal]) -> Principal:
    try:
        return check(request)
    except AuthError as exc:
        raise LoginRequired(str(exc), 403 if isinstance(exc, Forbidden) else 401) from None


def _page(request: Request, template: str, title: str, *, refresh_s: int | None = None, **context: Any) -> HTMLResponse:
    who = _who(request, access.viewer)
    body = _TEMPLATES.get_template(template).render(
        title=title,
        refresh_s=refresh_s,
        who=who,
        admin=who.role is Role.ADMIN,
        message=request.query_params.get("message"),
        **context,
    )
    return HTMLResponse(body)


def _login_page(reason: str | None, status: int = 200) -> HTMLResponse:
    page = _TEMPLATES.get_template("login.html").render(
        title="log in", reason=reason, who=None, message=None, refresh_s=None
    )
    return HTMLResponse(page, status_code=status)


router = APIRouter()


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    """The dashboard is the server's front page."""
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/login")
def login_page(request: Request, token: str | None = None) -> Response:
    """The login form; `?token=` logs in at once (a link to share with a viewer)."""
    if token:
        return _login(request, token)
    return _login_page(None)


@router.post("/login")
async def login_form(request: Request) -> Response:
    """Log in with the token posted by the form."""
    fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
    return _login(request, (fields.get("token") or [""])[0].strip())


def _login(request: Request, token: str) -> Response:
    tokens = request.app.state.tokens
    try:
        found = tokens.check(token)
        if found.role not in (Role.VIEWER, Role.ADMIN):
            raise AuthError(
                f"token {found.token_id} is a {found.role.value} token: log in with a viewer or admin token"
            )
    except AuthError as exc:
        return _login_page(str(exc), 401)
    answer = RedirectResponse("/dashboard", status_code=303)
    answer.set_cookie(
        access.COOKIE,
        token,
        max_age=_COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return answer


@router.post("/logout")
def logout() -> Response:
    """Forget the login cookie."""
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(access.COOKIE)
    return answer


@router.get("/dashboard", response_class=HTMLResponse)
def overview_page(request: Request) -> HTMLResponse:
    """Health and its reasons, every pipeline, jobs and nodes by status, recent alerts."""
    return _page(request, "overview.html", "overview", refresh_s=REFRESH_S, data=views.overview(_zl(request)))


def _refused(request: Request, exc: ZeroloopError, status: int) -> HTMLResponse:
    """The error page: what was wrong, as the error says it, with `status`."""
    page = _page(request, "error.html", "not shown", error=str(exc))
    page.status_code = status
    return page


@router.get("/dashboard/pipelines/{config_key}", response_class=HTMLResponse)
def pipeline_page(request: Request, config_key: str) -> HTMLResponse:
    """One pipeline: stage, training, Elo over time (a chart), decisions with their evidence."""
    try:
        data = views.pipeline(_zl(request), config_key)
    except ZeroloopError as exc:
        return _refused(request, exc, 404)
    chart = charts.elo_chart(data["elo_history"], title=f"{config_key}: Elo ({data['elo_relative_to']})")
    return _page(request, "pipeline.html", config_key, refresh_s=REFRESH_S, data=data, chart=chart)


@router.get("/dashboard/tunes/{config_key}", response_class=HTMLResponse)
def tune_page(request: Request, config_key: str) -> HTMLResponse:
    """A config key's newest tune: each variant's Elo against its CPU-seconds on one chart, and every trial."""
    try:
        data = views.population(_zl(request), config_key)
    except ZeroloopError as exc:
        return _refused(request, exc, 404)
    chart = population_chart.chart(data["series"], title=f"tune {data['id']} of {config_key}: Elo by CPU-seconds")
    return _page(request, "tune.html", f"tune {config_key}", refresh_s=REFRESH_S, data=data, chart=chart)


@router.get("/dashboard/models", response_class=HTMLResponse)
def models_page(request: Request, config: str | None = None) -> HTMLResponse:
    """The model registry, newest first, with each model's lineage back to its first ancestor."""
    found = views.models(_zl(request), config or None)
    chains = {model["id"]: views.lineage(found, model["id"]) for model in found}
    return _page(request, "models.html", "models", models=found, lineage=chains, config=config)


@router.get("/dashboard/queue", response_class=HTMLResponse)
def queue_page(request: Request) -> HTMLResponse:
    """Jobs by type and status with backpressure, dead jobs and dead letters."""
    return _page(request, "queue.html", "queue", data=views.queue(_zl(request)))


@router.get("/dashboard/nodes", response_class=HTMLResponse)
def nodes_page(request: Request) -> HTMLResponse:
    """Nodes (state, utilisation, provider, cost) and daemons (state, restarts, last error)."""
    zl = _zl(request)
    return _page(
        request, "nodes.html", "nodes", nodes=views.nodes(zl), daemons=views.daemons(zl),
        cost_per_hour=views.fleet_cost_per_hour(zl),
    )  # fmt: skip


@router.get("/dashboard/events", response_class=HTMLResponse)
def events_page(
    request: Request,
    type: str | None = None,
    config: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
) -> HTMLResponse:
    """The newest events, filtered by type and config key."""
    try:
        found = views.events(_zl(request), types=[type] if type else None, config_key=config or None, limit=limit)
    except ZeroloopError as exc:
        return _refused(request, exc, 422)
    return _page(
        request, "events.html", "events", events=found, types=sorted(EVENT_TYPES), type=type, config=config,
        limit=limit,
    )  # fmt: skip


def _act(request: Request, back: str, action: Callable[[App], str]) -> RedirectResponse:
    _who(request, access.admin)
    try:
        message = action(_zl(request))
    except ZeroloopError as exc:
        message = f"refused: {exc}"
    return RedirectResponse(f"{back}?{urllib.parse.urlencode({'message': message})}", status_code=303)


@router.post("/dashboard/actions/pipelines/{config_key}/pause")
def pause_form(request: Request, config_key: str) -> RedirectResponse:
    """Pause a pipeline (admin)."""
    return _act(request, f"/dashboard/pipelines/{config_key}", lambda zl: actions.set_paused(zl, config_key, True))


@router.post("/dashboard/actions/pipelines/{config_key}/resume")
def resume_form(request: Request, config_key: str) -> RedirectResponse:
    """Resume a pipeline (admin)."""
    return _act(request, f"/dashboard/pipelines/{config_key}", lambda zl: actions.set_paused(zl, config_key, False))


@router.post("/dashboard/actions/pipelines/{config_key}/rollback")
def rollback_form(request: Request, config_key: str) -> RedirectResponse:
    """Roll a config key back to its previous production model (admin)."""
    return _act(request, "/dashboard/models", lambda zl: actions.rollback(zl, config_key))


@router.post("/dashboard/actions/models/{model_id}/promote")
def promote_form(request: Request, model_id: str) -> RedirectResponse:
    """Promote a model by hand (admin)."""
    return _act(request, "/dashboard/models", lambda zl: actions.promote(zl, model_id))


@router.post("/dashboard/actions/nodes/{node_id}/drain")
def drain_form(request: Request, node_id: str) -> RedirectResponse:
    """Drain a node (admin)."""
    return _act(request, "/dashboard/nodes", lambda zl: actions.drain(zl, node_id))


@router.post("/dashboard/actions/dead-letters/{letter_id}/retry")
def retry_letter_form(request: Request, letter_id: int) -> RedirectResponse:
    """Make a dead letter due now (admin)."""
    return _act(request, "/dashboard/queue", lambda zl: actions.retry_letter(zl, letter_id))


@router.post("/dashboard/actions/jobs/{job_id}/retry")
def retry_job_form(request: Request, job_id: int) -> RedirectResponse:
    """Put a dead job back in the queue (admin)."""
    return _act(request, "/dashboard/queue", lambda zl: actions.retry_job(zl, job_id))


def install(api: FastAPI) -> None:
    """Add the dashboard's pages and forms to `api`, with the handler that answers a missing login."""

    @api.exception_handler(LoginRequired)
    async def login_required(_request: Request, exc: LoginRequired) -> HTMLResponse:
        return _login_page(exc.reason, exc.status)

    api.include_router(router)
    access_log = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactTokenQuery) for existing in access_log.filters):
        access_log.addFilter(RedactTokenQuery())
