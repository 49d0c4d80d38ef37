"""The dashboard's JSON API: the same data as its pages, under `/api/...`, and the admin actions.

Reads need a viewer (or admin) token off loopback; the POST actions need an admin token.
Errors come back as `{"error": ..., "detail": ...}` with the status `zeroloop.remote.wire`
gives them (401 without a usable token, 403 for a token whose role may not).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from zeroloop.app import App
from zeroloop.control import actions, views
from zeroloop.remote import wire
from zeroloop.server import access

router = APIRouter(prefix="/api")

# Every path and query parameter is checked as the worker API checks its own (zeroloop.remote.wire):
# a name of 1-200 printable characters, an id within the store's 64 bits; anything else is a 400.
_NAME = {"min_length": 1, "max_length": 200, "pattern": r"^[^\x00-\x1f\x7f]+$"}
ConfigKey = Annotated[str, Path(**_NAME)]
ModelId = Annotated[str, Path(**_NAME)]
NodeId = Annotated[str, Path(**_NAME)]
RowId = Annotated[int, Path(ge=1, le=wire.INT64_MAX)]
ConfigFilter = Annotated[str | None, Query(**_NAME)]


class QuarantineBody(BaseModel):
    """Why a node's results are quarantined (recorded with the decision)."""

    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=400, pattern=r"^[^\x00-\x1f\x7f]+$")]


def _zl(request: Request) -> App:
    app: App = request.app.state.zl
    return app


@router.get("/overview")
def overview(request: Request, _who: access.Viewer) -> dict[str, Any]:
    """Health, pipelines, jobs and nodes by status, fleet cost per hour, recent alerts."""
    return views.overview(_zl(request))


@router.get("/pipelines")
def pipelines(request: Request, _who: access.Viewer) -> list[dict[str, Any]]:
    """Every pipeline's state, training, production model and rating, cost."""
    return views.pipelines(_zl(request))


@router.get("/pipelines/{config_key}")
def pipeline(request: Request, _who: access.Viewer, config_key: ConfigKey) -> dict[str, Any]:
    """One pipeline with its Elo history and newest decisions (with evidence)."""
    return views.pipeline(_zl(request), config_key)


@router.get("/tunes/{config_key}")
def tune(request: Request, _who: access.Viewer, config_key: ConfigKey) -> dict[str, Any]:
    """The newest tune of a config key: trials, and each variant's Elo against its CPU-seconds."""
    return views.population(_zl(request), config_key)


@router.get("/decisions")
def decisions(
    request: Request, _who: access.Viewer, config: ConfigFilter = None, limit: int = Query(50, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """The newest decisions of one config key or of all, with their evidence."""
    return views.decisions(_zl(request), config, limit)


@router.get("/models")
def models(
    request: Request, _who: access.Viewer, config: ConfigFilter = None, limit: int = Query(100, ge=1, le=1000)
) -> list[dict[str, Any]]:
    """The model registry, newest first; `parent_id` gives the lineage."""
    return views.models(_zl(request), config, limit)


@router.get("/queue")
def queue(request: Request, _who: access.Viewer) -> dict[str, Any]:
    """Jobs by type and status, backpressure, dead jobs, dead letters, lifetime counters."""
    return views.queue(_zl(request))


@router.get("/nodes")
def nodes(request: Request, _who: access.Viewer) -> list[dict[str, Any]]:
    """Every node with status, utilisation, provider and cost."""
    return views.nodes(_zl(request))


@router.get("/daemons")
def daemons(request: Request, _who: access.Viewer) -> list[dict[str, Any]]:
    """Every daemon with state, restarts and last error."""
    return views.daemons(_zl(request))


@router.get("/health")
def health(request: Request, _who: access.Viewer) -> dict[str, Any]:
    """The health score, its level, components and issues."""
    return views.health(_zl(request))


@router.get("/events")
def events(
    request: Request,
    _who: access.Viewer,
    type: list[Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]{0,79}$")]] | None = Query(None, max_length=50),  # noqa: B008
    config: ConfigFilter = None,
    limit: int = Query(100, ge=1, le=1000),
) -> list[dict[str, Any]]:
    """The newest events, newest first, filtered by type (repeatable) and config key."""
    return views.events(_zl(request), types=type, config_key=config, limit=limit)


@router.get("/alerts")
def recent_alerts(request: Request, _who: access.Viewer, limit: int = Query(20, ge=1, le=500)) -> list[dict[str, Any]]:
    """The newest operational alerts with their summaries and rules."""
    return views.recent_alerts(_zl(request), limit)


@router.post("/pipelines/{config_key}/pause")
def pause(request: Request, _who: access.Admin, config_key: ConfigKey) -> dict[str, str]:
    """Pause a pipeline by hand."""
    return {"message": actions.set_paused(_zl(request), config_key, True)}


@router.post("/pipelines/{config_key}/resume")
def resume(request: Request, _who: access.Admin, config_key: ConfigKey) -> dict[str, str]:
    """Resume a paused pipeline."""
    return {"message": actions.set_paused(_zl(request), config_key, False)}


@router.post("/pipelines/{config_key}/rollback")
def rollback(request: Request, _who: access.Admin, config_key: ConfigKey) -> dict[str, str]:
    """Return a config key to its previous production model."""
    return {"message": actions.rollback(_zl(request), config_key)}


@router.post("/models/{model_id}/promote")
def promote(request: Request, _who: access.Admin, model_id: ModelId) -> dict[str, str]:
    """Make a model production by hand."""
    return {"message": actions.promote(_zl(request), model_id)}


@router.post("/nodes/{node_id}/drain")
def drain(request: Request, _who: access.Admin, node_id: NodeId) -> dict[str, str]:
    """Stop giving a node new work."""
    return {"message": actions.drain(_zl(request), node_id)}


@router.post("/dead-letters/{letter_id}/retry")
def retry_letter(request: Request, _who: access.Admin, letter_id: RowId) -> dict[str, str]:
    """Make a dead letter due for re-delivery now."""
    return {"message": actions.retry_letter(_zl(request), letter_id)}


@router.post("/jobs/{job_id}/retry")
def retry_job(request: Request, _who: access.Admin, job_id: RowId) -> dict[str, str]:
    """Put a dead or cancelled job back in the queue."""
    return {"message": actions.retry_job(_zl(request), job_id)}


@router.post("/nodes/{node_id}/quarantine")
def quarantine(
    request: Request, who: access.Admin, node_id: NodeId, body: Annotated[QuarantineBody, Body()]
) -> dict[str, str]:
    """Keep a node's results out of training windows from now on (the decision is recorded with who and why)."""
    return {"message": actions.quarantine(_zl(request), node_id, reason=body.reason, actor=f"token:{who.token_id}")}


@router.post("/nodes/{node_id}/unquarantine")
def unquarantine(request: Request, who: access.Admin, node_id: NodeId) -> dict[str, str]:
    """Let a quarantined node's results into training windows again."""
    return {"message": actions.lift_quarantine(_zl(request), node_id, actor=f"token:{who.token_id}")}
