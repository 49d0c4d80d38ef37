"""What ended leaves the default views and the metrics: terminated and failed nodes and their daemons.

After a few quickstart restarts the nodes page listed every old node (terminated, still
showing its last cpu 100%) and /metrics exported their values, which would trip alerts.
`--all` (CLI) and `?all=true` (JSON API) still show them.
"""

from __future__ import annotations

import httpx
from rich.console import Console

from tests.server.conftest import running_server
from zeroloop.app import App
from zeroloop.cli.cluster import daemons_table, nodes_table
from zeroloop.cluster.nodes import NodeInfo, NodeStatus
from zeroloop.control import views
from zeroloop.store.queries import daemons as daemon_queries

BUSY = {"cpu_pct": 100.0}


def _fleet(app: App) -> None:
    """w-live heartbeats; w-lost stopped heartbeating; w-old and w-bad ended; each node has a daemon row."""
    for node in ("w-live", "w-lost", "w-old", "w-bad"):
        app.nodes.register(NodeInfo(node, "h", "local", 1, 1, 1), utilisation=BUSY)
        with app.store.transaction() as conn:
            daemon_queries.upsert_daemon(
                conn,
                {"node": node, "name": "selfplay_executor", "state": "running", "health": {}, "restarts": 2,
                 "last_error": None, "updated_at": app.clock(), "started_at": app.clock()},
            )  # fmt: skip
    app.nodes.set_status("w-lost", NodeStatus.LOST)
    app.nodes.set_status("w-old", NodeStatus.TERMINATED)
    app.nodes.set_status("w-bad", NodeStatus.TERMINATING)
    app.nodes.set_status("w-bad", NodeStatus.TERMINATED)


def test_ended_nodes_and_their_daemons_leave_the_default_views(app: App) -> None:
    _fleet(app)
    shown = {row["id"]: row for row in views.nodes(app)}
    assert sorted(shown) == ["w-live", "w-lost"]  # a lost node may come back: it stays in view
    assert shown["w-live"]["utilisation"] == BUSY
    assert shown["w-lost"]["utilisation"] == {}  # its last reading is history, not load
    assert sorted(row["id"] for row in views.nodes(app, ended=True)) == ["w-bad", "w-live", "w-lost", "w-old"]
    assert sorted(row["node"] for row in views.daemons(app)) == ["w-live", "w-lost"]
    assert len(views.daemons(app, ended=True)) == 4
    assert views.overview(app)["nodes"] == {"active": 1, "lost": 1}

    console = Console(width=200, record=True)
    console.print(nodes_table(app), daemons_table(app))
    text = console.export_text()
    assert "w-live" in text and "w-old" not in text and "w-bad" not in text
    console = Console(width=200, record=True)
    console.print(nodes_table(app, ended=True), daemons_table(app, ended=True))
    assert console.export_text().count("w-old") == 2  # its node row and its daemon row


def test_ended_nodes_leave_the_metrics_and_the_api_shows_them_on_request(app: App) -> None:
    _fleet(app)
    with running_server(app, loopback=True) as url:  # no token exists: loopback is trusted
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        default = httpx.get(f"{url}/api/nodes", timeout=30).json()
        everything = httpx.get(f"{url}/api/nodes", params={"all": "true"}, timeout=30).json()
        daemons = httpx.get(f"{url}/api/daemons", params={"all": "true"}, timeout=30).json()
    exported = [line for line in metrics.splitlines() if not line.startswith("#")]
    assert any('node="w-live"' in line for line in exported)
    assert not any('node="w-old"' in line or 'node="w-bad"' in line for line in exported)
    assert not any('status="terminated"' in line for line in exported)
    assert not any('node="w-lost"' in line and "utilisation" in line for line in exported)
    assert sorted(row["id"] for row in default) == ["w-live", "w-lost"]
    assert len(everything) == 4 and len(daemons) == 4
