"""Decisions read as evidence: a sentence, labelled facts and result tables, from what each loop records; never JSON."""

from __future__ import annotations

import time
from typing import Any

from zeroloop.config import EvaluationSettings
from zeroloop.pipeline import watchdog
from zeroloop.pipeline.promotion import Evidence, Result
from zeroloop.pipeline.ratings import match_difference, signed
from zeroloop.server.evidence import readable

PRODUCTION, CANDIDATE = "ttt-0001-aa", "ttt-0002-bb"


def _json_free(found: dict[str, Any]) -> None:
    text = " ".join([found["headline"], *(f"{a} {b}" for a, b in found["facts"])])
    text += " ".join(str(cell) for table in found["tables"] for row in table["rows"] for cell in row)
    assert "{" not in text and "}" not in text and "[" not in text, text


def test_a_promotion_reads_as_its_reason_and_a_table_of_results_with_each_matchs_elo() -> None:
    evidence = {
        "model_id": CANDIDATE,
        "reason": "not worse than the best by 50 Elo: Elo +17 against the best, 90% lower bound -35",
        **Evidence(
            vs_best=Result(3, 15, 2),
            vs_baselines={"random": Result(9, 4, 7)},
            best_vs_baselines={"random": Result(18, 1, 1)},
            last_promotion_at=1_767_225_600.0,
            now=1_767_226_000.0,
        ).as_dict(),
        "joint_elo": {CANDIDATE: 132.4, PRODUCTION: 210.0},
    }
    found = readable("promotion", "promoted", evidence, 0.95)
    assert found["headline"] == evidence["reason"]
    (results,) = found["tables"]
    diff, half = match_difference(3, 15, 2, 0.95)
    assert results["rows"] == [
        [f"against production ({PRODUCTION})", "3", "15", "2", "0.53", f"{signed(diff)} ± {half:.0f}"],
        ["against random", "9", "4", "7", "0.55", "{} ± {:.0f}".format(*_elo(9, 4, 7))],
        ["production against random", "18", "1", "1", "0.93", "{} ± {:.0f}".format(*_elo(18, 1, 1))],
    ]
    facts = dict(found["facts"])
    assert facts["model"] == CANDIDATE and facts["joint Elo at the decision"] == f"{CANDIDATE} 132, {PRODUCTION} 210"
    assert facts["last promotion at"] == time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_767_225_600.0))
    _json_free(found)


def _elo(wins: int, draws: int, losses: int) -> tuple[str, float]:
    diff, half = match_difference(wins, draws, losses, 0.95)
    return signed(diff), half


def test_a_first_promotion_says_there_was_no_production_model() -> None:
    evidence = {"model_id": CANDIDATE, "reason": "first model: beats random (score lower bound 0.86)",
                **Evidence(None, {"random": Result(18, 1, 1)}).as_dict()}  # fmt: skip
    found = readable("promotion", "promoted", evidence)
    assert dict(found["facts"])["against production"] == "no production model yet"
    assert [row[0] for row in found["tables"][0]["rows"]] == ["against random"]  # no empty "production against"
    _json_free(found)


def test_a_watchdog_rollback_reads_as_the_head_to_head_record() -> None:
    verdict = watchdog.judge(1, 4, 15, EvaluationSettings())
    evidence = {"model_id": CANDIDATE, "restored_model_id": PRODUCTION, "reason": verdict.reason, **verdict.evidence}
    found = readable("watchdog", "rolled_back", evidence)
    assert found["headline"].startswith("loses to its predecessor by more than 50 Elo")
    (results,) = found["tables"]
    assert results["rows"][0][:5] == [f"{CANDIDATE} against {PRODUCTION}", "1", "4", "15", "0.15"]
    facts = dict(found["facts"])
    assert facts["restored model"] == PRODUCTION and facts["rollback bound (Elo)"] == "50"
    assert "wins" not in facts  # the tally is in the table, not repeated as facts
    _json_free(found)


def test_flagged_batches_become_a_table_and_mappings_of_figures_a_fact() -> None:
    quality = {
        "reason": "1 of 3 game batches kept out of training windows",
        "mean_moves": 7.25,
        "excluded_batches": {"ab" * 32: ["one outcome only", "degenerate length"]},
        "since": None,
    }
    found = readable("quality", "warning", quality)
    (table,) = found["tables"]
    assert table["title"] == "batches kept out of training"
    assert table["rows"] == [["ab" * 32, "one outcome only, degenerate length"]]
    assert dict(found["facts"]) == {"mean moves": "7.25", "since": "-"}
    autoscale = {"reason": "4 job(s) waiting", "queued_jobs": 4, "backpressure": {"selfplay": "HIGH"}, "disabled": True}
    facts = dict(readable("autoscale", "launch 1", autoscale)["facts"])
    assert facts == {"queued jobs": "4", "backpressure": "selfplay HIGH", "disabled": "yes"}
    nested = readable("curriculum", "reweighted", {"shares": {"a": 0.25}, "deep": {"x": {"y": 1}}})
    assert nested["headline"] == "curriculum: reweighted"
    assert dict(nested["facts"]) == {"shares": "a 0.25", "deep x": "y 1"}
    _json_free(found)
    _json_free(nested)
