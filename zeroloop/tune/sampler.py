"""A fresh variant's settings, proposed by Optuna's TPE or CMA-ES sampler from the trials told so far.

The study lives in the store, not in Optuna: each proposal rebuilds an in-memory study
from the tune's trials (each ended one told with its final joint rating, a dropped one as
failed) and asks it once, seeded by the tune and the proposal's number, so any leader
proposes the same settings from the same history. Optuna is imported here only, from the
`tune` extra (`pip install zeroloop[tune]`).

TPE starts from `startup` random proposals (the population's first draw) and models the
good and bad trials after; CMA-ES adapts a Gaussian over the range settings and leaves
choices (Gumbel on or off) to an independent random draw.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from zeroloop.errors import TuneError
from zeroloop.tune.space import Space, Tuned

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Told:
    """A finished trial: its settings and final rating (Elo); `value` None for a failed (dropped) one."""

    settings: Tuned
    value: float | None


def available() -> bool:
    """Whether Optuna can be imported here."""
    return importlib.util.find_spec("optuna") is not None


def _optuna() -> Any:
    if not available():
        raise TuneError("proposing settings needs Optuna: install the tune extra (pip install 'zeroloop[tune]')")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per study and trial in the leader's log
    return optuna


def _distributions(optuna: Any, space: Space) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, spec in space.ranges.items():
        if spec.choices is not None:
            found[name] = optuna.distributions.CategoricalDistribution(list(spec.choices))
        elif space.kind(name) is int:
            assert spec.low is not None and spec.high is not None
            found[name] = optuna.distributions.IntDistribution(int(spec.low), int(spec.high), log=spec.log)
        else:
            assert spec.low is not None and spec.high is not None
            found[name] = optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log)
    return found


def _fits(distribution: Any, value: Any) -> bool:
    try:
        return bool(distribution._contains(distribution.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False


def propose(
    space: Space, told: Sequence[Told], sampler: Literal["tpe", "cmaes"], *, seed: int, startup: int
) -> tuple[Tuned, int]:
    """New settings from the sampler over `space`, given the trials told; and how many told trials it used.

    A told trial whose settings fall outside the space (it was changed since) is left out.
    """
    optuna = _optuna()
    distributions = _distributions(optuna, space)
    with warnings.catch_warnings():
        # CMA-ES announces that it leaves choices to an independent sampler; that is the documented behaviour.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sampler == "cmaes":
            chosen = optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup, warn_independent_sampling=False)
        else:
            chosen = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        study = optuna.create_study(direction="maximize", sampler=chosen)
        used = 0
        for trial in told:
            params = {name: trial.settings[name] for name in distributions if name in trial.settings}
            if len(params) != len(distributions) or not all(_fits(distributions[n], v) for n, v in params.items()):
                continue
            failed = trial.value is None or not math.isfinite(trial.value)
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=distributions,
                    value=None if failed else trial.value,
                    state=optuna.trial.TrialState.FAIL if failed else optuna.trial.TrialState.COMPLETE,
                )
            )
            used += 1
        asked = study.ask(distributions)
    return {name: space.value(name, value) for name, value in asked.params.items()}, used
