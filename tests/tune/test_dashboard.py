"""The population on the dashboard and its JSON API: each variant's Elo against its CPU-seconds, for viewers."""

from __future__ import annotations

import httpx

from tests.server.conftest import running_server
from tests.tune.conftest import finish_job
from tests.tune.test_population import _rate, _started
from zeroloop.app import App
from zeroloop.control.tokens import Role, Tokens
from zeroloop.server.population_chart import chart
from zeroloop.tune.population import Population


def test_the_population_chart_draws_one_line_per_variant_with_a_legend() -> None:
    svg = chart({"k~t1v1": [[10.0, 50.0], [90.0, 120.0]], "k~t1v2": [[30.0, -20.0]]}, title="tune 1")
    assert svg.count('class="variant"') == 2 and ">t1v1</text>" in svg and ">t1v2</text>" in svg
    assert "CPU-s</text>" in svg and "t1v1: 120 Elo after 90 CPU-s" in svg
    assert "no ratings yet" in chart({}, title="tune 1")


def test_viewers_see_each_variants_elo_against_its_cpu_seconds(tuned: App) -> None:
    tune_id, _population, trials = _started(tuned, budget_cpu_s=1000.0)
    finish_job(tuned, trials[0]["variant"], "selfplay", {"cpu_s": 42.0})
    _rate(tuned, trials[0], 15)
    Population(tuned).step(tune_id)
    viewer = Tokens(tuned.store).create(Role.VIEWER)[0]
    with running_server(tuned) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/api/tunes/tic_tac_toe_2p").status_code == 401  # off loopback: a token is needed
        auth = {"Authorization": f"Bearer {viewer}"}
        data = client.get("/api/tunes/tic_tac_toe_2p", headers=auth).json()
        assert data["id"] == tune_id and data["spent"]["cpu_s"] == 42.0 and len(data["trials"]) == 3
        ((cpu_s, elo),) = data["series"][trials[0]["variant"]]
        assert cpu_s == 42.0 and elo > 0
        missing = client.get("/api/tunes/hex_2p", headers=auth)
        assert missing.status_code == 400 and "hex_2p has no tune" in missing.text
        page = client.get("/dashboard/tunes/tic_tac_toe_2p", headers=auth)
        assert page.status_code == 200 and 'class="variant"' in page.text and "t1v1" in page.text
        assert client.get("/dashboard/tunes/hex_2p", headers=auth).status_code == 404
