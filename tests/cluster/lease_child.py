"""A coordinator stand-in for the failover tests: elects, and writes under its token before each renewal.

Run as `python lease_child.py STORE_URL HOLDER TTL_S PAUSE_FILE`. It prints `TICK <token|None>` after
each election round and `WROTE <token>` / `REFUSED <token>` for each fenced write. The
write comes before the renewal on purpose: a leader paused with SIGSTOP resumes straight
into a write under its old token, which the guard must refuse. When PAUSE_FILE exists
after a round, the child removes it, prints `PAUSED` and stops itself with SIGSTOP, so the
test knows it is paused outside any transaction, just before its next write. When
PAUSE_FILE-in-transaction exists, it stops itself inside its next fenced write, holding
the lease row locked, and prints `PAUSED IN TRANSACTION` first; a write that fails on
resuming (its session was ended) prints `FAILED <token>`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from zeroloop.cluster.leases import LEADER, LeaderElector, LeaseManager, guard
from zeroloop.daemons.daemon import Leadership
from zeroloop.errors import LeaseError, StoreError
from zeroloop.events.bus import EventBus
from zeroloop.store.database import Store
from zeroloop.store.queries import daemons as daemon_queries


def main() -> None:
    url, holder, ttl_s, pause_file = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
    paused_in_transaction = Path(f"{pause_file}-in-transaction")
    store = Store(url)
    leases = LeaseManager(store, EventBus(store, node=holder, source="test"), holder=holder, ttl_s=ttl_s)
    leadership = Leadership()
    elector = LeaderElector(leases, leadership)
    deadline = time.monotonic() + 120  # bounded even if the test never kills it
    while time.monotonic() < deadline:
        token = leadership.token
        if token is not None:
            try:
                with store.transaction() as conn:
                    guard(conn, LEADER, token)
                    if paused_in_transaction.exists():  # stop holding the lease row locked, mid-transaction
                        paused_in_transaction.unlink()
                        print("PAUSED IN TRANSACTION", flush=True)
                        os.kill(os.getpid(), signal.SIGSTOP)
                    row = {
                        "node": holder,
                        "name": "fenced",
                        "state": "running",
                        "restarts": 0,
                        "last_error": None,
                        "health": {"token": token},
                        "started_at": None,
                        "updated_at": time.time(),
                    }
                    daemon_queries.upsert_daemon(conn, row)
                print(f"WROTE {token}", flush=True)
            except LeaseError:
                print(f"REFUSED {token}", flush=True)
            except StoreError:
                print(f"FAILED {token}", flush=True)  # e.g. its session was ended while it was paused
        try:
            elector.tick()
        except StoreError:
            leadership.held, leadership.token = False, None
        print(f"TICK {leadership.token}", flush=True)
        if pause_file.exists():
            pause_file.unlink()
            print("PAUSED", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(ttl_s / 10)


if __name__ == "__main__":
    main()
