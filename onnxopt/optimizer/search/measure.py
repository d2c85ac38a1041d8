"""Score one candidate for the search: cheap tiers first, latency last and only when feasible.

The metrics come from the measurement pipeline (:class:`~onnxopt.optimizer.evaluate.measure.
Measurer`, the same one ``onnxopt evaluate`` uses) on the validation split; this module adds
the search's constraints (values <= 0 mean satisfied) and the order: a candidate that is
already infeasible after the ``model`` and ``outputs`` tiers is never timed.

Screening (multi-fidelity, exact): with ``max_accuracy_drop``, the ``outputs`` tier scores
the split a share (``evaluation.screening``) at a time and stops a candidate as soon as
even every sample still to score right could not keep its drop within the limit, as a
pruner stops a trial whose intermediate values cannot recover, but with a bound instead of
a guess. A stopped candidate is a complete, infeasible trial: its ``accuracy_drop`` is the
smallest drop it could still have had (> 0), its accuracy and other output metrics are not
measured (objectives score their worst value, as latency does for any infeasible trial),
and ``screened`` records how many samples were scored.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxopt import metrics as registry
from onnxopt.config.search import Constraints, Evaluation
from onnxopt.optimizer.evaluate.accuracy import classification_metrics
from onnxopt.optimizer.evaluate.latency import LatencyResult
from onnxopt.optimizer.evaluate.measure import LatencyPlan, Loaded, Measurer, check_finite


@dataclass
class TrialScore:
    """Metric values of one candidate and named constraint values (<= 0 means satisfied)."""

    metrics: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    latency_skipped: str | None = None
    latency_spread: dict[str, dict[str, float]] | None = None
    """Per batch size (a string key) the median, quartiles and runs behind each latency."""
    screened: dict[str, int] | None = None
    """With screening: samples ``scored`` of the split's ``of``, and ``stopped`` (0 or 1)."""

    @property
    def feasible(self) -> bool:
        return all(c <= 0 for c in self.constraints.values())


class Evaluator:
    """Scores candidates on one split against the fp32 baseline.

    Args:
        measurer: The measurement pipeline on the validation split (never test), with the
            task and the metrics the search needs.
        evaluation: Latency budget, threads and runtime.
        constraints: Feasibility limits.
        baseline: The fp32 base model's metrics on the same split (None while measuring the
            baseline itself).
        latency_lock: Held while timing (workers on one machine time one at a time).
    """

    def __init__(
        self,
        measurer: Measurer,
        evaluation: Evaluation,
        constraints: Constraints,
        *,
        baseline: Mapping[str, float] | None = None,
        latency_lock: AbstractContextManager | None = None,
    ) -> None:
        self.measurer = measurer
        self.evaluation = evaluation
        self.limits = constraints
        self.baseline = dict(baseline) if baseline is not None else None
        self.latency_lock = latency_lock if latency_lock is not None else contextlib.nullcontext()
        self.plan = LatencyPlan(
            evaluation.batch_sizes, evaluation.warmup, evaluation.repeats, evaluation.min_time_s
        )

    @property
    def baseline_accuracy(self) -> float | None:
        return None if self.baseline is None else self.baseline.get("accuracy")

    def reference_outputs(self, model: onnx.ModelProto) -> np.ndarray:
        """The fp32 model's scored outputs on the split (what fidelity metrics compare with)."""
        return self.measurer.outputs(self.measurer.load(model))

    def for_trials(
        self,
        baseline: Mapping[str, float],
        reference: np.ndarray,
        latency_lock: AbstractContextManager | None = None,
    ) -> Evaluator:
        """An evaluator for the trials: the baseline's metrics and outputs bound, and the
        latency lock (the fitted inputs are shared)."""
        return Evaluator(
            self.measurer.with_reference(reference), self.evaluation, self.limits,
            baseline=baseline, latency_lock=latency_lock,
        )  # fmt: skip

    def measure(
        self, model: onnx.ModelProto, *, latency: bool = True, data: bytes | None = None
    ) -> TrialScore:
        """All metrics of one model; latency only when the cheap constraints hold.

        Args:
            model: The candidate.
            latency: Measure latency (when the cheap constraints hold).
            data: ``model`` already serialized, so a trial serializes it once.

        Raises:
            EvaluationError: When the runtime refuses the model or a metric is not finite.
        """
        loaded = self.measurer.load(model, data=data)
        out = TrialScore(metrics=self.measurer.model_metrics(loaded))
        outputs, out.screened = self._screen(loaded)
        if out.screened is not None and out.screened["stopped"]:
            out.constraints = self._stopped_constraints(out.metrics, out.screened)
            out.latency_skipped = "stopped early: it cannot meet max_accuracy_drop"
            check_finite(out.metrics)
            return out
        out.metrics.update(self.measurer.output_metrics(loaded, outputs)[0])
        out.constraints = self._cheap_constraints(out.metrics)
        if not latency:
            out.latency_skipped = "not requested"
        elif not out.feasible:
            out.latency_skipped = "a cheaper constraint is already violated"
            if self.limits.max_latency_ms is not None:
                # keeps one value per constraint; the trial is infeasible through the others
                out.constraints["latency"] = 0.0
        else:
            with self.latency_lock:
                timed, result = self.measurer.latency_metrics(loaded, self.plan)
            out.metrics.update(timed)
            out.latency_spread = latency_spread(result)
            if self.limits.max_latency_ms is not None:
                out.constraints["latency"] = out.metrics["latency"] - self.limits.max_latency_ms
        check_finite(out.metrics)
        return out

    def _needed_correct(self) -> int | None:
        """Samples a candidate must get right on the whole split to meet max_accuracy_drop
        (None when screening does not apply: no such limit, no baseline, no labels)."""
        limit, base = self.limits.max_accuracy_drop, self.baseline_accuracy
        split = self.measurer.split
        if limit is None or base is None or split.y is None or not self.evaluation.screening:
            return None
        if self.measurer.task != "classification":
            return None
        n = len(split)
        return registry.samples_of(base, n) - registry.allowed_samples(limit, n)

    def _screen(self, loaded: Loaded) -> tuple[np.ndarray | None, dict[str, int] | None]:
        """The outputs on the whole split (None when stopped or not screened) and the
        screening record (None when screening does not apply)."""
        need = self._needed_correct()
        n = len(self.measurer.split)
        step = math.ceil(self.evaluation.screening * n)
        if need is None or step >= n:
            return None, None
        y = np.asarray(self.measurer.split.y)
        parts, correct = [], 0
        for start in range(0, n, step):
            stop = min(start + step, n)
            part = self.measurer.outputs(loaded, slice(start, stop))
            parts.append(part)
            scored = classification_metrics(part, y[start:stop], output=loaded.io.output_name)
            correct += registry.samples_of(scored.accuracy, stop - start)
            if stop < n and correct + (n - stop) < need:
                return None, {"scored": stop, "of": n, "stopped": 1, "correct": correct}
        return np.concatenate(parts), {"scored": n, "of": n, "stopped": 0}

    def _stopped_constraints(self, metrics: dict[str, float], screened: dict[str, int]):
        """A stopped candidate's constraints: ``accuracy_drop`` at the smallest drop it could
        still have had (> 0); the others, not measured, satisfied (it is infeasible anyway)."""
        n, need = screened["of"], self._needed_correct()
        assert need is not None
        best = screened["correct"] + n - screened["scored"]
        values = {name: 0.0 for name in self._constraint_names()}
        values["accuracy_drop"] = (need - best) / n
        if self.limits.max_size_bytes is not None:
            values["size"] = metrics["size"] - self.limits.max_size_bytes
        return values

    def _constraint_names(self) -> list[str]:
        """Every constraint a trial records a value for (one per configured limit)."""
        limits = self.limits
        names = ["accuracy_drop"] if limits.max_accuracy_drop is not None else []
        names += [f"{name}_drop" for name in limits.max_metric_drop]
        names += ["size"] if limits.max_size_bytes is not None else []
        names += ["latency"] if limits.max_latency_ms is not None else []
        return names

    def _cheap_constraints(self, metrics: dict[str, float]) -> dict[str, float]:
        values = {}
        limits = self.limits
        n = len(self.measurer.split)
        if limits.max_accuracy_drop is not None and self.baseline_accuracy is not None:
            drop = self.baseline_accuracy - metrics["accuracy"]
            values["accuracy_drop"] = drop_value(drop, limits.max_accuracy_drop, n, counted=True)
        values.update(metric_drops(metrics, self.baseline, limits.max_metric_drop, self.spec, n))
        if limits.max_size_bytes is not None:
            values["size"] = metrics["size"] - limits.max_size_bytes
        return values

    def spec(self, name: str) -> registry.MetricSpec:
        """A metric's spec (user metrics: as the config defines them)."""
        user = self.measurer.user_metrics.get(name)
        return user if user is not None else registry.metric(name)

    def direction(self, name: str) -> str:
        """A metric's direction (user metrics: as their spec says)."""
        return self.spec(name).direction


def latency_spread(result: LatencyResult) -> dict[str, dict[str, float]]:
    """Plain JSON per batch size: median, quartiles (the spread) and runs, in ms."""
    return {
        str(r.batch_size): {"median_ms": r.median_ms, "q1_ms": r.q1_ms, "q3_ms": r.q3_ms,
                            "runs": r.runs}
        for r in result.stats
    }  # fmt: skip


def drop_value(worse: float, limit: float, n: int, *, counted: bool) -> float:
    """A drop constraint's value (<= 0 satisfied): how much worse than the baseline, less the
    allowed drop.

    A counted metric (a share of ``n`` samples) compares in samples: ``k`` samples lost
    against :func:`~onnxopt.metrics.allowed_samples`, so a drop of exactly the limit is 0
    (feasible) rather than a rounding error above it, and one sample more is ``1 / n``. The
    value stays in the metric's units (samples over ``n``).
    """
    if not counted or n <= 0:
        return worse - limit
    return (registry.samples_of(worse, n) - registry.allowed_samples(limit, n)) / n


def metric_drops(
    metrics: Mapping[str, float],
    baseline: Mapping[str, float] | None,
    limits: Mapping[str, float],
    spec,
    n: int,
) -> dict[str, float]:
    """``<metric>_drop`` constraint values (:func:`drop_value`): a fall for maximized metrics,
    a rise for minimized ones, on a split of ``n`` samples."""
    if baseline is None:
        return {}
    out = {}
    for name, limit in limits.items():
        metric = spec(name)
        worse = baseline[name] - metrics[name]
        if metric.direction == "minimize":
            worse = -worse
        out[f"{name}_drop"] = drop_value(worse, limit, n, counted=metric.counted)
    return out
