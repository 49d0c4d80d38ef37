"""What a tune may try: the search space over AlphaZero parameters, and how explore perturbs a variant's settings.

Explore (population-based training, Jaderberg et al. 2017), applied to a copy of a
stronger variant's settings:

- a range setting is drawn afresh from its range with probability
  `tune.resample_probability`; otherwise it is multiplied by one of `tune.perturb_factors`
  (0.8 or 1.25), chosen at random, and clamped to its range. An integer is rounded, and
  moved by one in the factor's direction if rounding would leave it where it was;
- a choice setting (Gumbel on or off) is replaced by another of its choices with the same
  probability, else kept;
- the network's shape (blocks, channels) is never perturbed: the copied weights fix it.

Every change is reported (from, to, how), and goes into the `explored` decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from zeroloop.config import TUNE_SHAPE_PARAMS, TuneRange, TuneSettings, WorkloadSettings

Tuned = dict[str, float | bool]  # a variant's settings: AlphaZero parameter -> value


def _kind(name: str) -> type:
    annotation = WorkloadSettings.model_fields[name].annotation
    return annotation if isinstance(annotation, type) else float


@dataclass(frozen=True)
class Space:
    """The parameters a tune varies, each a range or a list of choices, typed as WorkloadSettings types them."""

    ranges: Mapping[str, TuneRange]

    @classmethod
    def of(cls, settings: TuneSettings, *, fixed_shape: bool = False) -> Space:
        """The configured space; without the network's shape when the variants start from one model's weights."""
        return cls({n: r for n, r in settings.space.items() if not (fixed_shape and n in TUNE_SHAPE_PARAMS)})

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Space:
        """The space a tune stored when it started (so later settings changes do not change a running tune)."""
        return cls({name: TuneRange.model_validate(spec) for name, spec in record.items()})

    def record(self) -> dict[str, Any]:
        """The space as plain data, for the tune's row."""
        return {name: spec.model_dump(exclude_none=True) for name, spec in self.ranges.items()}

    def kind(self, name: str) -> type:
        """The Python type of parameter `name` (int, float or bool), as WorkloadSettings declares it."""
        return _kind(name)

    def value(self, name: str, raw: float | bool) -> float | bool:
        """`raw` as parameter `name` holds it: an integer rounded, a bool as a bool, a range clamped."""
        spec, kind = self.ranges[name], _kind(name)
        if spec.choices is not None:
            return bool(raw) if kind is bool else raw
        assert spec.low is not None and spec.high is not None
        clamped = min(max(float(raw), spec.low), spec.high)
        return round(clamped) if kind is int else clamped

    def sample(self, name: str, rng: np.random.Generator) -> float | bool:
        """A value of `name` drawn uniformly from its choices or range (log-uniformly for a log range)."""
        spec = self.ranges[name]
        if spec.choices is not None:
            return self.value(name, spec.choices[int(rng.integers(len(spec.choices)))])
        assert spec.low is not None and spec.high is not None
        if spec.log:
            return self.value(name, math.exp(rng.uniform(math.log(spec.low), math.log(spec.high))))
        return self.value(name, rng.uniform(spec.low, spec.high))

    def perturb(
        self, tuned: Mapping[str, float | bool], rng: np.random.Generator, factors: tuple[float, float], resample: float
    ) -> tuple[Tuned, dict[str, dict[str, Any]]]:
        """Explore: new settings from `tuned` (see the module docstring), and each change as {from, to, how}."""
        result: Tuned = dict(tuned)
        changes: dict[str, dict[str, Any]] = {}
        for name, spec in self.ranges.items():
            if name in TUNE_SHAPE_PARAMS or name not in tuned:
                continue
            old = tuned[name]
            if spec.choices is not None:
                others = [c for c in spec.choices if c != old]
                if others and rng.random() < resample:
                    result[name] = self.value(name, others[int(rng.integers(len(others)))])
                    changes[name] = {"from": old, "to": result[name], "how": "resampled"}
                continue
            if rng.random() < resample:
                new, how = self.sample(name, rng), "resampled"
            else:
                factor = factors[int(rng.integers(len(factors)))]
                new, how = self.value(name, float(old) * factor), f"x{factor:g}"
                if _kind(name) is int and new == old:  # a small integer would never move by rounding
                    new = self.value(name, int(old) + (1 if factor > 1 else -1))
            if new != old:
                result[name] = new
                changes[name] = {"from": old, "to": new, "how": how}
        return result, changes
