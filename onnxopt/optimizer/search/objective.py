"""The trial function: suggest a point, build its candidate, measure it, store plain JSON.

Failure policy: a candidate that cannot be built or that onnxruntime refuses (or whose
metrics are not finite) raises :class:`CandidateFailed`; the study records a FAIL trial with
the reason in the ``fail_reason`` user attr and goes on.
"""

from __future__ import annotations

import math

import optuna

from onnxopt.config.search import Search
from onnxopt.errors import DataError, EvaluationError, ModelLoadError, RewriteError
from onnxopt.optimizer.search.candidate import CandidateBuilder, model_hash
from onnxopt.optimizer.search.measure import Evaluator
from onnxopt.optimizer.search.space import SearchSpace

TRIAL_ERRORS = (EvaluationError, RewriteError, DataError, ModelLoadError)
"""Errors that fail one trial (the candidate is bad), not the search."""


class CandidateFailed(Exception):
    """A candidate failed to build or run; the reason is in the trial's ``fail_reason``."""


def objective_names(search: Search) -> list[str]:
    """Objective names in order: the metrics, or one ``scaled_sum``."""
    return ["scaled_sum"] if search.strategy.sum_scaled_metrics else list(search.metrics)


def objective_directions(search: Search) -> list[str]:
    """Optuna directions of the objectives."""
    if search.strategy.sum_scaled_metrics:
        return ["maximize"]
    return [search.direction(m) for m in search.metrics]


def scaled_metrics(search: Search, metrics: dict[str, float]) -> dict[str, float]:
    """``scale * value`` of every objective metric that was measured."""
    return {m: cfg.scale * metrics[m] for m, cfg in search.metrics.items() if m in metrics}


def objective_values(search: Search, metrics: dict[str, float]) -> list[float]:
    """Objective values; a metric not measured (latency of an infeasible trial) is the worst."""
    scaled = scaled_metrics(search, metrics)
    worst = {"maximize": -math.inf, "minimize": math.inf}
    if search.strategy.sum_scaled_metrics:
        sign = {"maximize": 1.0, "minimize": -1.0}
        if len(scaled) < len(search.metrics):
            return [-math.inf]
        return [sum(sign[search.direction(m)] * v for m, v in scaled.items())]
    return [scaled.get(m, worst[search.direction(m)]) for m in search.metrics]


class Objective:
    """Callable for ``study.optimize``."""

    def __init__(self, space: SearchSpace, builder: CandidateBuilder, evaluator: Evaluator):
        self.space = space
        self.builder = builder
        self.evaluator = evaluator

    def __call__(self, trial: optuna.Trial) -> list[float]:
        choice = self.space.suggest(trial)
        try:
            candidate = self.builder.build(self.space, choice)
            trial.set_user_attr("config", candidate.config_dict())
            data = candidate.model.SerializeToString()
            trial.set_user_attr("model_sha256", model_hash(data))
            measured = self.evaluator.measure(candidate.model, data=data)
        except TRIAL_ERRORS as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise CandidateFailed(str(exc)) from exc
        trial.set_user_attr("metrics", measured.metrics)
        trial.set_user_attr("constraints", measured.constraints)
        for name, value in measured.constraints.items():
            trial.set_constraint(name, value)  # samplers steer by these
        trial.set_user_attr("feasible", measured.feasible)
        if measured.latency_skipped:
            trial.set_user_attr("latency_skipped", measured.latency_skipped)
        return objective_values(self.space.search, measured.metrics)
