"""CLI input: each bad value gives one clear error and a non-zero exit, and changes nothing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cli.main import app as cli
from zeroloop.cluster.leases import LEADER
from zeroloop.cluster.nodes import NodeInfo, Nodes
from zeroloop.config import Settings
from zeroloop.errors import EventError, QueueError, ZeroloopError
from zeroloop.pipeline.jobs import JOB_TYPES
from zeroloop.store.queries import consumers as consumer_queries
from zeroloop.store.queries import pipelines as pipeline_queries


@pytest.fixture
def run(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("ZEROLOOP_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def _invoke(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(cli, list(args))


def _consumer_at(settings: Settings, handled: int, published: int) -> None:
    with App(settings) as zl:
        for index in range(published):
            zl.bus.publish("NODE_LOST", {"node": f"n{index}", "silent_s": 1.0})
        with zl.store.transaction() as conn:
            consumer_queries.ensure_consumer(
                conn, "c", types=(), config_keys=None, node="n", start=(0, handled), now=1.0
            )


def _cursor(settings: Settings) -> tuple[int, int] | None:
    with App(settings) as zl, zl.store.read() as conn:
        return consumer_queries.get_cursor(conn, "c")


def test_replay_past_the_newest_event_is_refused_and_the_cursor_stays(run: CliRunner, settings: Settings) -> None:
    _consumer_at(settings, handled=2, published=5)
    result = _invoke(run, "events", "replay", "--consumer", "c", "--from", "99")
    assert isinstance(result.exception, EventError)
    assert "--from 99 is past the newest event (id 5): give 1 to 5" in str(result.exception)
    assert _cursor(settings) == (0, 2)


def test_replay_may_not_move_a_cursor_forward(run: CliRunner, settings: Settings) -> None:
    _consumer_at(settings, handled=2, published=5)
    ahead = _invoke(run, "events", "replay", "--consumer", "c", "--from", "5")
    assert isinstance(ahead.exception, EventError) and "give --from 3 or lower" in str(ahead.exception)
    assert _cursor(settings) == (0, 2)
    assert _invoke(run, "events", "replay", "--consumer", "c", "--from", "3").exit_code == 0
    assert _invoke(run, "events", "replay", "--consumer", "c", "--from", "1").exit_code == 0
    assert _cursor(settings) == (0, 0)


def test_replay_on_an_empty_log_is_refused(run: CliRunner, settings: Settings) -> None:
    _consumer_at(settings, handled=0, published=0)
    result = _invoke(run, "events", "replay", "--consumer", "c", "--from", "1")
    assert isinstance(result.exception, EventError) and "the event log is empty" in str(result.exception)


def test_an_unknown_event_type_is_refused_listing_the_known_ones(run: CliRunner) -> None:
    result = _invoke(run, "events", "tail", "--type", "NO_SUCH_TYPE")
    assert isinstance(result.exception, EventError)
    assert "unknown event type 'NO_SUCH_TYPE': choose from" in str(result.exception)
    assert "NODE_LOST" in str(result.exception)
    assert _invoke(run, "events", "tail", "--type", "NODE_LOST").exit_code == 0


def test_an_unknown_job_type_is_refused_listing_the_known_ones(run: CliRunner, settings: Settings) -> None:
    with App(settings) as zl:
        zl.queue.enqueue("custom-step", "c")
    result = _invoke(run, "queue", "ls", "--type", "nope")
    assert isinstance(result.exception, QueueError)
    assert "choose from" in str(result.exception) and all(name in str(result.exception) for name in JOB_TYPES)
    assert _invoke(run, "queue", "ls", "--type", "custom-step").exit_code == 0
    assert _invoke(run, "queue", "ls", "--status", "bogus").exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--watch", "--interval", "-1"),
        ("status", "--watch", "--interval", "0"),
        ("status", "--watch", "--interval", "nan"),
        ("models", "ls", "--limit", "0"),
        ("pipeline", "decisions", "c", "--limit", "-5"),
        ("queue", "ls", "--limit", "0"),
        ("events", "tail", "--limit", "-1"),
        ("events", "replay", "--consumer", "c", "--from", "0"),
        ("quickstart", "--minutes", "inf"),
        ("quickstart", "--workers", "0"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(run: CliRunner, args: tuple[str, ...]) -> None:
    result = _invoke(run, *args)
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output and "Traceback" not in result.output


def test_health_check_fails_without_a_leader_or_a_node_for_queued_work(run: CliRunner, settings: Settings) -> None:
    with App(settings) as zl:
        zl.queue.enqueue("selfplay", "c")
    nobody = _invoke(run, "health", "--check")
    assert nobody.exit_code == 1 and "leader" in nobody.output and "no live node" in nobody.output
    with App(settings) as zl:
        assert zl.leases.acquire(LEADER) is not None
        Nodes(zl.store, zl.bus).register(NodeInfo("w1", "h", "local", 1, 2**30, 2**30))
    assert _invoke(run, "health", "--check").exit_code == 0


def test_health_counts_a_node_whose_heartbeats_stopped_as_gone(settings: Settings) -> None:
    clock = FakeClock()
    with App(settings) as zl:
        zl.leases.clock = zl.health.clock = zl.queue.clock = clock
        zl.leases.ttl_s = 10_000.0
        assert zl.leases.acquire(LEADER) is not None
        Nodes(zl.store, zl.bus, clock=clock).register(NodeInfo("w1", "h", "local", 1, 2**30, 2**30))
        zl.queue.enqueue("selfplay", "c")
        assert zl.health.assess().level.value == "healthy"
        clock.advance(zl.settings.cluster.node_lost_after_s + 1)  # nobody marked it lost: no reaper ran
        report = zl.health.assess()
        assert report.inputs.nodes_available == 0 and report.score <= 0.5 and report.level.value != "healthy"


def test_an_unknown_consumer_is_refused_listing_the_known_ones(run: CliRunner, settings: Settings) -> None:
    _consumer_at(settings, handled=0, published=1)
    result = _invoke(run, "dlq", "ls", "--consumer", "nobody")
    assert isinstance(result.exception, EventError) and "no consumer named 'nobody': choose from c" in str(
        result.exception
    )
    assert _invoke(run, "dlq", "ls", "--consumer", "c").exit_code == 0


@pytest.mark.parametrize("key", ["", "x" * 201, "bad\x00key"])
def test_a_bad_config_key_is_refused_when_a_pipeline_starts(settings: Settings, key: str) -> None:
    from zeroloop.bootstrap import start_pipeline

    with App(settings) as zl:
        with pytest.raises(ZeroloopError, match="config key"):
            start_pipeline(zl, key)
        with zl.store.read() as conn:
            assert pipeline_queries.list_pipelines(conn) == []
