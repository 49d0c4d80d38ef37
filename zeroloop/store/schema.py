"""The one schema of zeroloop's state, for SQLite and PostgreSQL alike.

Times are UNIX epoch seconds as floats (clock-injectable, comparable across backends);
sizes are bytes. The migrations under `migrations/versions` create and evolve exactly
these tables; a test compares the migrated database against this metadata.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only aliases the rowid (and so autoincrements) for a column typed exactly INTEGER.
Id = BigInteger().with_variant(Integer, "sqlite")
# None is stored as SQL NULL (not the JSON text 'null'), so `IS NULL` tests mean what they say.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
Key = String(200)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("type", String(80), nullable=False),
    Column("payload", Json, nullable=False),
    Column("source", Key, nullable=False),
    Column("node", Key, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("config_key", Key),
    Column("trace_id", String(64)),
    Column("correlation_id", String(64)),
    Column("causation_id", BigInteger),
    Column("dedup_key", String(300), unique=True),
    # PostgreSQL only: the writing transaction's id, so readers can hold back events of
    # transactions still in flight (sequence order is not commit order there).
    Column("txid", BigInteger),
    Index(None, "type", "id"),
    Index(None, "created_at"),
    # SQLite never sets txid: partial there, so appending an event leaves this index alone.
    Index(None, "txid", "id", sqlite_where=sa.text("txid IS NOT NULL")),
)

consumers = Table(
    "consumers",
    metadata,
    Column("name", Key, primary_key=True),
    Column("cursor", BigInteger, nullable=False, default=0),
    # PostgreSQL only (0 on SQLite): the txid half of the (txid, id) position the cursor is at.
    Column("cursor_txid", BigInteger, nullable=False, default=0),
    Column("types", Json, nullable=False),
    Column("config_keys", Json),
    Column("node", Key),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", BigInteger, nullable=False),
    Column("consumer", Key, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("traceback", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("next_retry_at", Float),
    Index(None, "status", "next_retry_at"),
)

event_metrics = Table(
    "event_metrics",
    metadata,
    Column("event_type", String(80), primary_key=True),
    Column("consumer", Key, primary_key=True),
    Column("published", BigInteger, nullable=False, default=0),
    Column("delivered", BigInteger, nullable=False, default=0),
    Column("failed", BigInteger, nullable=False, default=0),
    Column("dead", BigInteger, nullable=False, default=0),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("type", String(80), nullable=False),
    Column("config_key", Key, nullable=False),
    Column("payload", Json, nullable=False),
    Column("priority", Integer, nullable=False),
    # What the job requires of a node, in typed columns so the claim filters by plain
    # comparisons (labels: NULL when none, else a JSON array every one of which the node needs).
    Column("need_gpus", Integer, nullable=False),
    Column("need_memory_bytes", BigInteger, nullable=False),
    Column("need_labels", Json),
    Column("target_node", Key),
    Column("idempotency_key", String(300), unique=True),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("run_after", Float, nullable=False),
    Column("lease_node", Key),
    Column("lease_token", BigInteger, nullable=False, default=0),
    # Dependencies not yet completed: claimable only at 0; completing a job that has_dependents
    # decrements its dependents' count.
    Column("waiting_on", Integer, nullable=False, default=0),
    Column("has_dependents", Boolean, nullable=False, default=False),
    Column("lease_expires_at", Float),
    Column("claimed_at", Float),
    Column("result", Json),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
)
# Partial indexes over the only statuses the hot path looks up, so a finished job leaves
# both and the claim/complete transaction writes fewer index pages: the claim order
# (highest priority first, then FIFO by id) of queued jobs, and the expiry of running ones.
_QUEUED, _RUNNING = sa.text("status = 'queued'"), sa.text("status = 'running'")
Index("ix_jobs_claim", jobs.c.type, jobs.c.priority.desc(), jobs.c.id, sqlite_where=_QUEUED, postgresql_where=_QUEUED)
Index("ix_jobs_lease_expiry", jobs.c.lease_expires_at, sqlite_where=_RUNNING, postgresql_where=_RUNNING)

job_dependencies = Table(
    "job_dependencies",
    metadata,
    Column("job_id", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("depends_on", BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Index(None, "depends_on"),
)

# The last backpressure level seen per queue type, so a change is detected across processes.
backpressure = Table(
    "backpressure",
    metadata,
    Column("queue_type", String(80), primary_key=True),
    Column("level", String(20), nullable=False),
    Column("depth", Integer, nullable=False),
    Column("updated_at", Float, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", Key, primary_key=True),
    Column("host", Key, nullable=False),
    Column("provider", String(80), nullable=False),
    Column("labels", Json, nullable=False),
    Column("cpu_count", Integer, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("disk_bytes", BigInteger, nullable=False),
    Column("gpus", Json, nullable=False),
    Column("cost_per_hour", Float),
    Column("status", String(20), nullable=False),
    Column("utilisation", Json, nullable=False),
    Column("registered_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("idle_since", Float),
    Column("status_changed_at", Float, nullable=False),
    # Fleet: the provider pool that launched the node (NULL: started by hand), the
    # provider's own handle for the machine, and when it must register by.
    Column("pool", String(80)),
    Column("provider_id", String(400)),
    Column("profile", String(40)),
    Column("launched_at", Float),
    Column("register_by", Float),
    Column("slots", Integer, nullable=False, server_default="1"),
    Column("last_error", Text),
    # Cost: seconds billed in closed intervals, and the start of the open one (NULL when not billed).
    Column("billed_s", Float, nullable=False, server_default="0"),
    Column("billing_since", Float),
    # When the node was asked to drain (NULL: it is not draining): a drain outlives silence and restarts.
    Column("draining_since", Float),
    Index(None, "pool", "status"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", Key, primary_key=True),
    Column("holder", Key),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("acquired_at", Float, nullable=False),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("config_key", Key),
    Column("producer_job_id", BigInteger),
    Column("meta", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Index(None, "config_key", "kind", "created_at"),
)

artifact_copies = Table(
    "artifact_copies",
    metadata,
    Column("sha256", String(64), ForeignKey("artifacts.sha256", ondelete="CASCADE"), primary_key=True),
    Column("location", String(1000), primary_key=True),
    Column("node", Key),
    Column("status", String(20), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("verified_at", Float),
)

models = Table(
    "models",
    metadata,
    Column("id", Key, primary_key=True),
    Column("config_key", Key, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("parent_id", Key),
    Column("window_sha256", String(64)),
    Column("job_ids", Json, nullable=False),
    Column("stage", String(20), nullable=False),
    Column("elo", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("promoted_at", Float),
    Column("meta", Json, nullable=False),
    Index(None, "config_key", "stage"),
)

matches = Table(
    "matches",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("config_key", Key, nullable=False),
    Column("player_a", Key, nullable=False),
    Column("player_b", Key, nullable=False),
    Column("wins", Integer, nullable=False),
    Column("draws", Integer, nullable=False),
    Column("losses", Integer, nullable=False),
    Column("elo_diff", Float, nullable=False),
    Column("elo_ci", Float, nullable=False),
    Column("job_id", BigInteger),
    Column("created_at", Float, nullable=False),
    Index(None, "config_key", "created_at"),
)

elo_history = Table(
    "elo_history",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("model_id", Key, nullable=False),
    Column("config_key", Key, nullable=False),
    Column("elo", Float, nullable=False),
    Column("match_id", BigInteger),
    Column("created_at", Float, nullable=False),
    Index(None, "model_id", "created_at"),
)

pipelines = Table(
    "pipelines",
    metadata,
    Column("config_key", Key, primary_key=True),
    Column("stage", String(20), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("samples_total", BigInteger, nullable=False),
    Column("samples_since_training", BigInteger, nullable=False),
    Column("current_model_id", Key),
    Column("paused", Boolean, nullable=False),
    Column("pause_reason", Text),
    Column("last_promotion_at", Float),
    Column("progress", Json),
    Column("updated_at", Float, nullable=False),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("config_key", Key, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("outcome", String(40), nullable=False),
    Column("evidence", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Index(None, "config_key", "created_at"),
)

daemons = Table(
    "daemons",
    metadata,
    Column("node", Key, primary_key=True),
    Column("name", String(80), primary_key=True),
    Column("state", String(20), nullable=False),
    Column("restarts", Integer, nullable=False),
    Column("last_error", Text),
    Column("health", Json, nullable=False),
    Column("started_at", Float),
    Column("updated_at", Float, nullable=False),
)

circuit_breakers = Table(
    "circuit_breakers",
    metadata,
    Column("key", Key, primary_key=True),
    Column("state", String(20), nullable=False),
    Column("failures", Integer, nullable=False),
    Column("successes", Integer, nullable=False),
    Column("opened_at", Float),
    Column("updated_at", Float, nullable=False),
)

job_stats = Table(
    "job_stats",
    metadata,
    Column("config_key", Key, primary_key=True),
    Column("job_type", String(80), primary_key=True),
    Column("queued", BigInteger, nullable=False),
    Column("claimed", BigInteger, nullable=False),
    Column("completed", BigInteger, nullable=False),
    Column("failed", BigInteger, nullable=False),
    Column("expired", BigInteger, nullable=False),
    Column("dead", BigInteger, nullable=False),
    Column("cancelled", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# API tokens of `zeroloop serve`: only the sha256 of each secret is kept (the secret is shown once).
tokens = Table(
    "tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("node", Key),
    Column("note", String(200)),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("revoked_at", Float),
    Column("last_used_at", Float),
)

# Short-lived credentials a worker token is exchanged for, each bound to the token's node and
# refreshed as the worker heartbeats; only the sha256 of each secret is kept. Revoking the
# token revokes them all (they are checked against it).
credentials = Table(
    "credentials",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("token_id", String(40), ForeignKey("tokens.id", ondelete="CASCADE"), nullable=False),
    Column("node", Key, nullable=False),
    Column("secret_sha256", String(64), nullable=False, unique=True),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index(None, "node", "expires_at"),
)

# An admin's decision to keep one node's results out of training windows (lifted_at: ended).
node_quarantines = Table(
    "node_quarantines",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("node", Key, nullable=False),
    Column("reason", String(400), nullable=False),
    Column("actor", String(80), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("lifted_at", Float),
    Column("lifted_by", String(80)),
    Index(None, "node", "lifted_at"),
)

# Population-based training of one config key's settings (zeroloop.tune): a tune, and each set of settings
# one of its variants ran (a trial), with the CPU- and GPU-seconds spent and the rating reached.
tunes = Table(
    "tunes",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("config_key", Key, nullable=False),
    Column("status", String(20), nullable=False),
    Column("sampler", String(20), nullable=False),
    Column("variants", Integer, nullable=False),
    Column("budget_cpu_s", Float),
    Column("budget_gpu_s", Float),
    Column("spent_cpu_s", Float, nullable=False),
    Column("spent_gpu_s", Float, nullable=False),
    Column("space", Json, nullable=False),
    Column("progress", Json, nullable=False),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("adopted_at", Float),
    Index(None, "config_key", "status"),
)

tune_trials = Table(
    "tune_trials",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("tune_id", BigInteger, ForeignKey("tunes.id", ondelete="CASCADE"), nullable=False),
    Column("variant", Key, nullable=False),
    Column("number", Integer, nullable=False),
    Column("settings", Json, nullable=False),
    Column("origin", String(20), nullable=False),
    Column("parent_id", BigInteger),
    Column("start_model_id", Key),
    Column("status", String(20), nullable=False),
    Column("elo", Float),
    Column("elo_stderr", Float),
    Column("cpu_s", Float, nullable=False),
    Column("gpu_s", Float, nullable=False),
    Column("reason", Text),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("updated_at", Float, nullable=False),
    Index(None, "tune_id", "status"),
    Index(None, "variant"),
)
