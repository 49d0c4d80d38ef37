"""The admin actions the dashboard and its JSON API offer, as the CLI performs them.

Each action is one named operation over an App and returns the sentence that reports
what it did; a refused action raises the zeroloop error the CLI would show.
"""

from __future__ import annotations

from zeroloop.cluster.nodes import NodeStatus
from zeroloop.errors import ZeroloopError
from zeroloop.events.deadletters import DeadLetters
from zeroloop.ports import AppParts
from zeroloop.store.queries import pipelines as queries
from zeroloop.store.queries import quarantine as quarantine_queries

MANUAL_PAUSE = "paused by hand"
MANUAL_RESUME = "resumed by hand"


def set_paused(app: AppParts, config_key: str, paused: bool) -> str:
    """Pause (or resume) a pipeline by hand and announce it; a pipeline already so is left alone."""
    with app.store.transaction() as conn:
        state = queries.get_pipeline(conn, config_key, for_update=True)
        if state is None:
            raise ZeroloopError(f"no pipeline {config_key!r}: see `zeroloop pipeline ls`")
        if bool(state["paused"]) == paused:
            return f"{config_key}: already {'paused' if paused else 'running'}"
        queries.update_pipeline(
            conn, config_key, app.clock(), paused=paused, pause_reason=MANUAL_PAUSE if paused else None
        )
        app.bus.publish(
            "PIPELINE_PAUSED" if paused else "PIPELINE_RESUMED",
            {"config_key": config_key, "reason": MANUAL_PAUSE if paused else MANUAL_RESUME},
        )
    return f"{config_key}: {'paused' if paused else 'resumed'}"


def promote(app: AppParts, model_id: str) -> str:
    """Make a model production by hand (recorded as a manual promotion)."""
    changed = app.models.promote(model_id, reason="manual")
    return f"{model_id} is {'now' if changed else 'already'} the production model"


def rollback(app: AppParts, config_key: str) -> str:
    """Return a config key to its previous production model; the current one is marked rejected."""
    restored = app.models.rollback(config_key)
    return f"{config_key}: production model is {restored.id} again"


def drain(app: AppParts, node_id: str) -> str:
    """Stop giving a node new work (its running jobs finish)."""
    app.nodes.set_status(node_id, NodeStatus.DRAINING)
    return f"node {node_id} is draining: it claims no new job"


def retry_letter(app: AppParts, letter_id: int) -> str:
    """Make a dead letter due now; its consumer's retrier re-delivers it on its next pass."""
    letter = DeadLetters(app.store).retry(letter_id)
    return f"dead letter {letter.id} is {letter.status}, due now"


def retry_job(app: AppParts, job_id: int) -> str:
    """Put a dead or cancelled job back in the queue with a fresh set of attempts."""
    job = app.queue.retry(job_id)
    return f"job {job.id} is {job.status.value} again"


def quarantine(app: AppParts, node_id: str, *, reason: str, actor: str) -> str:
    """Keep a node's results out of training windows from now on, recording who decided (`actor`) and why."""
    with app.store.transaction() as conn:
        made = quarantine_queries.quarantine_node(conn, node=node_id, reason=reason, actor=actor, now=app.clock())
    if made is None:
        return f"node {node_id}'s results are already quarantined"
    return f"node {node_id}'s results are quarantined: kept out of training windows"


def lift_quarantine(app: AppParts, node_id: str, *, actor: str) -> str:
    """Let a quarantined node's results into training windows again (recorded with `actor`)."""
    with app.store.transaction() as conn:
        lifted = quarantine_queries.lift_quarantine(conn, node=node_id, actor=actor, now=app.clock())
    if not lifted:
        raise ZeroloopError(f"node {node_id}'s results are not quarantined: see `zeroloop nodes ls`")
    return f"node {node_id}'s results count again"
