"""Brute force over a finite categorical space: every point once, in a seeded random order.

Optuna's ``BruteForceSampler`` rebuilds its grid from every trial's params, so one trial that
a kill interrupted while its params were being sampled (a few set, the rest not) makes the
grid inconsistent and every later trial fail ("param_name mismatch"); it also stops the
study itself, which works only inside ``Study.optimize``. This sampler knows the space from
the start (the config's dimensions), counts a point as taken only when a trial that counts
(finished or running, not interrupted) holds all of its params, and leaves stopping to
onnxopt's trial loop. Points are drawn under the trial slot lock, so workers never take the
same one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

ENUMERATE_UP_TO = 50_000
"""Spaces up to this size are enumerated (exact); larger ones sampled by rejection."""
_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


class ExhaustiveSampler(BaseSampler):
    """Each point of ``dimensions`` once (then random points: the loop stops at the size).

    Args:
        dimensions: Parameter name -> its choices.
        seed: Seed of the order.
    """

    def __init__(self, dimensions: Mapping[str, tuple[Any, ...]], seed: int | None = None):
        self._names = tuple(dimensions)
        self._choices = {n: tuple(c) for n, c in dimensions.items()}
        self._dists = {n: CategoricalDistribution(list(c)) for n, c in self._choices.items()}
        self._rng = np.random.RandomState(seed)
        self.size = math.prod(len(c) for c in self._choices.values())

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return dict(self._dists)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        taken = self.taken(study.get_trials(deepcopy=False, states=_COUNTED))
        point = self._untaken(taken)
        return dict(zip(self._names, point, strict=True))

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        assert isinstance(param_distribution, CategoricalDistribution), param_name
        choices = param_distribution.choices
        return choices[self._rng.randint(len(choices))]

    def taken(self, trials: list[FrozenTrial]) -> set[tuple[Any, ...]]:
        """Points held in full by trials that count (interrupted ones are queued again)."""
        out = set()
        for t in trials:
            if t.user_attrs.get("interrupted"):
                continue
            if all(n in t.params for n in self._names):
                out.add(tuple(t.params[n] for n in self._names))
        return out

    def _untaken(self, taken: set[tuple[Any, ...]]) -> tuple[Any, ...]:
        if self.size <= ENUMERATE_UP_TO:
            left = [p for p in self._points() if p not in taken]
            if left:
                return left[self._rng.randint(len(left))]
        else:
            for _ in range(1000):
                point = tuple(self._choices[n][self._rng.randint(len(self._choices[n]))]
                              for n in self._names)  # fmt: skip
                if point not in taken:
                    return point
        # every point is taken: the loop stops at the space's size, so this is a spare draw
        return tuple(c[self._rng.randint(len(c))] for c in self._choices.values())

    def _points(self):
        import itertools

        return itertools.product(*(self._choices[n] for n in self._names))
