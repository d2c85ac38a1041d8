"""The trial function: suggest a point, build its candidate, measure it, store plain JSON.

Failure policy: a candidate that onnxopt cannot build, that the runtime refuses or fails to
run, or whose metrics are not finite (every such failure is an
:class:`~onnxopt.errors.OnnxoptError`) raises :class:`~onnxopt.errors.CandidateError`; the
study records a FAIL trial with the reason in the ``fail_reason`` user attr and goes on.
Any other exception is a bug in onnxopt: it propagates and stops the search.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, replace

import onnx
import optuna
from optuna.trial import FrozenTrial, TrialState

from onnxopt.config.search import Search
from onnxopt.errors import CandidateError, OnnxoptError
from onnxopt.metrics import Direction
from onnxopt.optimizer.search.candidate import CandidateBuilder, model_hash
from onnxopt.optimizer.search.measure import Evaluator, TrialScore
from onnxopt.optimizer.search.space import Choice, SearchSpace
from onnxopt.runtime.contained import stage

MAX_CACHED_CANDIDATES = 16
MAX_CACHED_SCORES = 4096
SAME_AS = "same_as"
"""User attr of a trial at a point an earlier complete trial measured: that trial's number."""
COPIED = ("config", "model_sha256", "metrics", "constraints", "feasible")
"""User attrs a revisit copies from the earlier trial (every complete trial has them)..."""
COPIED_IF_SET = ("latency_skipped", "latency_spread", "screened")
"""... and these, when it has them."""


def objective_names(search: Search) -> list[str]:
    """Objective names in order: the metrics, or one ``scaled_sum``."""
    return ["scaled_sum"] if search.strategy.sum_scaled_metrics else list(search.metrics)


def objective_directions(search: Search) -> list[Direction]:
    """Optuna directions of the objectives."""
    if search.strategy.sum_scaled_metrics:
        return ["maximize"]
    return [search.direction(m) for m in search.metrics]


def scaled_metrics(search: Search, metrics: dict[str, float]) -> dict[str, float]:
    """``scale * value`` of every objective metric that was measured."""
    return {m: cfg.scale * metrics[m] for m, cfg in search.metrics.items() if m in metrics}


def objective_values(search: Search, metrics: dict[str, float]) -> list[float]:
    """Objective values; a metric not measured (latency of an infeasible trial) is the worst
    value of its direction, and a scaled sum missing any metric is the worst sum (-inf)."""
    scaled = scaled_metrics(search, metrics)
    worst = {"maximize": -math.inf, "minimize": math.inf}
    if search.strategy.sum_scaled_metrics:
        sign = {"maximize": 1.0, "minimize": -1.0}
        if len(scaled) < len(search.metrics):
            return [-math.inf]
        return [sum(sign[search.direction(m)] * v for m, v in scaled.items())]
    return [scaled.get(m, worst[search.direction(m)]) for m in search.metrics]


class Objective:
    """Builds and measures one trial's candidate (``suggest`` then ``evaluate``).

    A point a complete trial of the study already measured (this worker's or another's: a
    sampler that revisits, TPE or NSGA-II on a small space) is not built again: the build
    is deterministic, so that trial's model, metrics and constraints are this one's too, and
    the trial records which it copied (``same_as``). Otherwise built candidates are kept in
    a small cache keyed by the trial's parameters, and scores by the model's SHA-256, so a
    model already measured in this process (another point that builds the same bytes) is
    not measured again: its accuracy is the same and its latency is a measurement of the
    same bytes (the report measures the final front again).
    """

    def __init__(self, space: SearchSpace, builder: CandidateBuilder, evaluator: Evaluator):
        self.space = space
        self.builder = builder
        self.evaluator = evaluator
        self._built: OrderedDict[tuple, _Built] = OrderedDict()
        self._scores: OrderedDict[str, TrialScore] = OrderedDict()
        self._done: dict[tuple, FrozenTrial] = {}
        self._seen: set[int] = set()

    def suggest(self, trial: optuna.Trial) -> Choice:
        """Sample the trial's point (stored in the study as its params)."""
        return self.space.suggest(trial)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        return self.evaluate(trial, self.suggest(trial))

    def evaluate(self, trial: optuna.Trial, choice: Choice) -> list[float]:
        """Build and measure the point; store plain-JSON results in the trial.

        Raises:
            CandidateError: When onnxopt or the runtime cannot build or measure the
                candidate; the reason is in ``fail_reason``.
        """
        earlier = self._earlier(trial)
        if earlier is not None:
            return self._copy(trial, earlier)
        try:
            with stage(f"measuring trial {trial.number}"):
                built = self._build(trial, choice)
                trial.set_user_attr("config", built.config)
                trial.set_user_attr("model_sha256", built.sha256)
                measured = self._measure(built)
        except OnnxoptError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason)
            raise CandidateError(reason) from exc
        trial.set_user_attr("metrics", measured.metrics)
        trial.set_user_attr("constraints", measured.constraints)
        for name, value in measured.constraints.items():
            trial.set_constraint(name, value)  # samplers steer by these
        trial.set_user_attr("feasible", measured.feasible)
        if measured.latency_skipped:
            trial.set_user_attr("latency_skipped", measured.latency_skipped)
        if measured.latency_spread:
            trial.set_user_attr("latency_spread", measured.latency_spread)
        if measured.screened:
            trial.set_user_attr("screened", measured.screened)
        return objective_values(self.space.search, measured.metrics)

    def _earlier(self, trial: optuna.Trial) -> FrozenTrial | None:
        """A complete trial of the study at the same point (the first one), or None."""
        key = _point(trial.params)
        if key not in self._done:
            for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if t.number not in self._seen and all(k in t.user_attrs for k in COPIED):
                    self._seen.add(t.number)
                    self._done.setdefault(_point(t.params), t)
        return self._done.get(key)

    def _copy(self, trial: optuna.Trial, earlier: FrozenTrial) -> list[float]:
        """Record ``earlier``'s results as this trial's (the same point, the same model)."""
        for name in (*COPIED, *COPIED_IF_SET):
            if name in earlier.user_attrs:
                trial.set_user_attr(name, earlier.user_attrs[name])
        for name, value in earlier.user_attrs["constraints"].items():
            trial.set_constraint(name, value)
        trial.set_user_attr(SAME_AS, earlier.number)
        return objective_values(self.space.search, dict(earlier.user_attrs["metrics"]))

    def _measure(self, built: _Built) -> TrialScore:
        """The model's score, measured once per distinct model (failures are not kept)."""
        if built.sha256 not in self._scores:
            self._scores[built.sha256] = self.evaluator.measure(built.model, data=built.data)
            if len(self._scores) > MAX_CACHED_SCORES:
                self._scores.popitem(last=False)
        self._scores.move_to_end(built.sha256)
        score = self._scores[built.sha256]
        # a copy per trial: trials never share (or change) the kept dicts
        return replace(score, metrics=dict(score.metrics), constraints=dict(score.constraints))

    def _build(self, trial: optuna.Trial, choice: Choice) -> _Built:
        key = _point(trial.params)
        if key not in self._built:
            candidate = self.builder.build(self.space, choice)
            data = candidate.model.SerializeToString()
            self._built[key] = _Built(
                candidate.model, data, model_hash(data), candidate.config_dict()
            )
            if len(self._built) > MAX_CACHED_CANDIDATES:
                self._built.popitem(last=False)
        self._built.move_to_end(key)
        return self._built[key]


def _point(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


@dataclass(frozen=True)
class _Built:
    model: onnx.ModelProto
    data: bytes
    sha256: str
    config: dict
