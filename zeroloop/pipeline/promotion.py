"""The promotion policy: whether a candidate model replaces the production model.

A decision is a pure function of the evidence (match results and times), so it can be
recorded with that evidence and re-checked later. With the candidate's score s over n
games against an opponent (win 1, draw 1/2, loss 0) and per-game variance v (floored
at 1/(4n) so a short one-sided run is not certainty), the one-sided bounds at
confidence c are s -/+ z_c * sqrt(v / n). The candidate is promoted when, in order:

1. the cooldown since the last promotion has passed (else: rejected, "cooldown");
2. its score against every baseline reaches `baseline_floor`, when one is set;
3. with `evaluation.gate = "none"`: always (KataGo's choice: no gating matches; the
   tournaments rate it and the regression watchdog rolls production back when it is
   clearly worse than its predecessor);
4. there is no production model yet and it beat the first baseline (lower bound > 1/2);
   or it played at least `min_eval_games` against the production model and passes the
   gate that `evaluation.gate` names:
   - `non_inferior` (the default): the one-sided lower bound at `promote_confidence` of its
     Elo difference to the production model (the match smoothed with
     `evaluation.rating_prior_games` virtual games, half won, half lost) is above
     `-evaluation.gate_margin_elo`. A candidate that draws every game passes once the
     match is long enough; one that is clearly weaker does not.
   - `sprt`: the SPRT of H0 "Elo <= -gate_margin_elo" against H1 "Elo >= 0" (same
     smoothing; error rates `gate_alpha`, `gate_beta`) has accepted H1 on the games played.
   - `better`: its score lower bound exceeds `promote_win_rate` ("beats the current
     best"), or its upper bound is at least 1/2 and its score against the strongest
     baseline exceeds the production model's by `baseline_margin`. On a game that is
     drawn with best play (tic-tac-toe) this rule stalls: nothing can beat a model that
     never loses.

Why non-inferiority is the default, and how its drift is bounded: docs/pipeline.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from zeroloop.config import EvaluationSettings, PipelineSettings
from zeroloop.workload.elo import elo_bounds, gate_llr, sprt_bounds


@dataclass(frozen=True)
class Result:
    """A match from the candidate's side: wins, draws, losses (games)."""

    wins: int
    draws: int
    losses: int

    @property
    def games(self) -> int:
        """Games played."""
        return self.wins + self.draws + self.losses

    @property
    def score(self) -> float:
        """Mean score per game (0.5 for no games)."""
        return (self.wins + 0.5 * self.draws) / self.games if self.games else 0.5

    def bounds(self, confidence: float) -> tuple[float, float]:
        """One-sided lower and upper bounds of the score at `confidence`."""
        if not self.games:
            return 0.0, 1.0
        mean = self.score
        variance = (self.wins * (1 - mean) ** 2 + self.draws * (0.5 - mean) ** 2 + self.losses * mean**2) / self.games
        spread = NormalDist().inv_cdf(confidence) * math.sqrt(max(variance, 0.25 / self.games) / self.games)
        return mean - spread, mean + spread


@dataclass(frozen=True)
class Evidence:
    """What a promotion decision rests on (times: epoch seconds)."""

    vs_best: Result | None
    vs_baselines: dict[str, Result]
    best_vs_baselines: dict[str, Result] = field(default_factory=dict)
    last_promotion_at: float | None = None
    now: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the decision record."""

        def plain(result: Result | None) -> dict[str, int] | None:
            return None if result is None else {"wins": result.wins, "draws": result.draws, "losses": result.losses}

        return {
            "vs_best": plain(self.vs_best),
            "vs_baselines": {name: plain(result) for name, result in self.vs_baselines.items()},
            "best_vs_baselines": {name: plain(result) for name, result in self.best_vs_baselines.items()},
            "last_promotion_at": self.last_promotion_at,
            "now": self.now,
        }


@dataclass(frozen=True)
class Decision:
    """The outcome of the policy and the reason, in words."""

    promote: bool
    reason: str


def decide(
    settings: PipelineSettings,
    evidence: Evidence,
    baseline_order: list[str],
    evaluation: EvaluationSettings | None = None,
) -> Decision:
    """Apply the policy; `baseline_order` lists baselines weakest first (the last is the strongest).

    `evaluation` holds the gate against the production model (default: EvaluationSettings()).
    """
    evaluation = evaluation or EvaluationSettings()
    confidence = settings.promote_confidence
    if evidence.last_promotion_at is not None and evidence.now - evidence.last_promotion_at < (
        settings.promotion_cooldown_s
    ):
        return Decision(False, f"cooldown: last promotion {evidence.now - evidence.last_promotion_at:.0f} s ago")
    if settings.baseline_floor is not None:
        for name, result in evidence.vs_baselines.items():
            if result.score < settings.baseline_floor:
                return Decision(False, f"score {result.score:.2f} against {name} is below {settings.baseline_floor}")
    if evaluation.gate == "none":
        return Decision(True, "no gate: every trained candidate is promoted; tournaments and the watchdog judge it")
    if evidence.vs_best is None:
        played = [name for name in baseline_order if name in evidence.vs_baselines]
        if not played:
            return Decision(False, "no production model and no baseline result to judge against")
        low, _ = evidence.vs_baselines[played[0]].bounds(confidence)
        if low > 0.5:
            return Decision(True, f"first model: beats {played[0]} (score lower bound {low:.2f})")
        return Decision(False, f"first model does not clearly beat {played[0]} (score lower bound {low:.2f})")
    vs_best = evidence.vs_best
    if vs_best.games < settings.min_eval_games:
        return Decision(False, f"only {vs_best.games} games against the best, need {settings.min_eval_games}")
    if evaluation.gate == "non_inferior":
        return _non_inferior(vs_best, confidence, evaluation)
    if evaluation.gate == "sprt":
        return _sprt(vs_best, evaluation)
    return _better(settings, evidence, vs_best, baseline_order)


def _non_inferior(vs_best: Result, confidence: float, evaluation: EvaluationSettings) -> Decision:
    margin = evaluation.gate_margin_elo
    bounds = elo_bounds(vs_best.wins, vs_best.draws, vs_best.losses, confidence, evaluation.rating_prior_games)
    said = f"Elo {round(bounds.elo):+d} against the best, {confidence:.0%} lower bound {round(bounds.low):+d}"
    if bounds.low > -margin:
        return Decision(True, f"not worse than the best by {margin:.0f} Elo: {said}")
    return Decision(False, f"may be more than {margin:.0f} Elo worse than the best: {said}")


def _sprt(vs_best: Result, evaluation: EvaluationSettings) -> Decision:
    margin = evaluation.gate_margin_elo
    llr = gate_llr(vs_best.wins, vs_best.draws, vs_best.losses, -margin, 0.0, evaluation.rating_prior_games)
    lower, upper = sprt_bounds(evaluation.gate_alpha, evaluation.gate_beta)
    said = f"SPRT of Elo <= -{margin:.0f} against Elo >= 0: LLR {llr:.2f}, bounds {lower:.2f}..{upper:.2f}"
    if llr >= upper:
        return Decision(True, f"not worse than the best: {said}")
    verdict = "worse than the best" if llr <= lower else "not shown to be as strong as the best"
    return Decision(False, f"{verdict}: {said}")


def _better(settings: PipelineSettings, evidence: Evidence, vs_best: Result, baseline_order: list[str]) -> Decision:
    low, high = vs_best.bounds(settings.promote_confidence)
    if low > settings.promote_win_rate:
        return Decision(True, f"beats the current best: score {vs_best.score:.2f}, lower bound {low:.2f}")
    strongest = next((name for name in reversed(baseline_order) if name in evidence.vs_baselines), None)
    if high >= 0.5 and strongest is not None and strongest in evidence.best_vs_baselines:
        gain = evidence.vs_baselines[strongest].score - evidence.best_vs_baselines[strongest].score
        if gain > settings.baseline_margin:
            return Decision(
                True, f"as strong as the best (score {vs_best.score:.2f}) and {gain:+.2f} against {strongest}"
            )
    return Decision(False, f"not better than the current best: score {vs_best.score:.2f}, lower bound {low:.2f}")
