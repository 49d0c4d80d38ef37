"""PostgreSQL: transactions that commit out of id order never make a consumer skip an event.

Case 1: A inserts id 1, B inserts id 2, B commits first. A reader using `id > cursor`
would take 2 and skip 1 when A commits; under the horizon, 2 waits until A finishes.
Case 2: A takes its txid first, B takes its own, B inserts id 1, A inserts id 2, A
commits. Under the horizon id 2 is readable (A finished) while B still runs; an id
cursor would be at 2 and skip 1 when B commits. The (txid, id) cursor puts B's event
after A's, so it is delivered.
"""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from tests.events.conftest import no_sleep
from tests.helpers import FakeClock
from zeroloop.config import EventSettings
from zeroloop.events.bus import EventBus
from zeroloop.events.consumer import ConsumerSpec
from zeroloop.events.runner import ConsumerRunner
from zeroloop.store.database import Store
from zeroloop.store.queries import events as queries


def _row(node: str) -> dict[str, object]:
    return {
        "type": "NODE_LOST",
        "payload": {"node": node, "silent_s": 0.0},
        "source": "t",
        "node": "n",
        "created_at": 0.0,
    }


def _insert(conn: sa.Connection, node: str) -> int:
    return queries.insert_event(conn, _row(node))[0]


@pytest.mark.parametrize("case", ["later_insert_commits_first", "earlier_txid_inserts_later"])
def test_out_of_order_commits_are_never_skipped(
    pg_store: Store, event_settings: EventSettings, clock: FakeClock, case: str
) -> None:
    store = pg_store  # SQLite serializes writers, so there id order is commit order
    bus = EventBus(store, node="n", source="t", clock=clock)
    seen: list[int] = []
    runner = ConsumerRunner(bus, [ConsumerSpec("c", lambda e: seen.append(e.id))], event_settings, sleep=no_sleep)
    a, b = store.engine.connect(), store.engine.connect()
    try:
        tx_a, tx_b = a.begin(), b.begin()
        if case == "later_insert_commits_first":
            id_a = _insert(a, "a")
            id_b = _insert(b, "b")
            tx_b.commit()
            first, last = (id_b, tx_a)
        else:
            a.exec_driver_sql("SELECT pg_current_xact_id()")  # A's txid is taken before B's
            b.exec_driver_sql("SELECT pg_current_xact_id()")
            id_b = _insert(b, "b")
            id_a = _insert(a, "a")
            tx_a.commit()
            first, last = (id_a, tx_b)
        asyncio.run(runner.run_once())
        with store.read() as conn:
            _horizon, high, newest = queries.marks(conn)
        # Case 1: B's committed event waits behind A, still open. Case 2: A's event is readable at once.
        assert (high < newest) == (case == "later_insert_commits_first")
        committed_late = id_a if first == id_b else id_b
        assert committed_late < first  # the case really is out of id order
        assert seen in ([], [first])
        last.commit()
        for _ in range(5):
            asyncio.run(runner.run_once())
        assert sorted(seen) == sorted([id_a, id_b])
    finally:
        a.close()
        b.close()
