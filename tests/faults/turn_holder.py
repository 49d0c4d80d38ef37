"""A writer for the write-turn tests: takes the SQLite write turn, writes a row, then stops or dawdles inside it.

Run as `python turn_holder.py STORE_URL stop|sleep SECONDS`. It prints `HOLDING` once
inside its transaction (after its write), then either stops itself (SIGSTOP) or sleeps
SECONDS, still inside, and commits; it prints `COMMITTED` after the commit.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from zeroloop.store.database import Store
from zeroloop.store.queries import daemons as daemon_queries


def main() -> None:
    url, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    with Store(url) as store, store.transaction() as conn:
        row = {
            "node": "holder",
            "name": "holder",
            "state": "running",
            "restarts": 0,
            "last_error": None,
            "health": {},
            "started_at": None,
            "updated_at": time.time(),
        }
        daemon_queries.upsert_daemon(conn, row)
        print("HOLDING", flush=True)
        if mode == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        else:
            time.sleep(seconds)
    print("COMMITTED", flush=True)


if __name__ == "__main__":
    main()
