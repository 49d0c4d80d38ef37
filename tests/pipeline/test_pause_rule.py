"""The health pause rule writes only when it changes a pipeline: a steady tick costs a read, not a write turn."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.helpers import FakeClock
from zeroloop.app import App
from zeroloop.cluster.leases import LeaderElector
from zeroloop.daemons.daemon import DaemonContext, Leadership
from zeroloop.pipeline.daemons import SchedulerDaemon
from zeroloop.store.queries import pipelines as queries


def test_a_steady_pause_rule_opens_no_write_transaction(
    app: App, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    leadership = Leadership()
    assert LeaderElector(app.leases, leadership).tick()
    with app.store.transaction() as conn:
        queries.ensure_pipeline(conn, "tic_tac_toe_2p", clock())
    daemon = SchedulerDaemon(DaemonContext(app, leadership, clock))
    writes: list[int] = []
    transaction = app.store.transaction

    @contextmanager
    def counted() -> Iterator[Any]:
        if not app.store.in_transaction:  # a joined one (the publish inside) is the same transaction
            writes.append(1)
        with transaction() as conn:
            yield conn

    monkeypatch.setattr(app.store, "transaction", counted)
    daemon.apply_pause(False)  # healthy and running: nothing to change
    assert writes == []
    daemon.apply_pause(True)  # unhealthy: pause it
    assert len(writes) == 1
    daemon.apply_pause(True)  # still paused: nothing to change
    assert len(writes) == 1
    daemon.apply_pause(False)  # recovered: resume it
    assert len(writes) == 2
    with app.store.read() as conn:
        assert not queries.get_pipeline(conn, "tic_tac_toe_2p")["paused"]  # type: ignore[index]
