"""Score one candidate for the search: cheap tiers first, latency last and only when feasible.

The metrics come from the measurement pipeline (:class:`~onnxopt.optimizer.evaluate.measure.
Measurer`, the same one ``onnxopt evaluate`` uses) on the validation split; this module adds
the search's constraints (values <= 0 mean satisfied) and the order: a candidate that is
already infeasible after the ``model`` and ``outputs`` tiers is never timed.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import onnx

from onnxopt.config.search import Constraints, Evaluation
from onnxopt.data.dataset import Split
from onnxopt.optimizer.evaluate.measure import LatencyPlan, Measurer, check_finite


@dataclass
class TrialScore:
    """Metric values of one candidate and named constraint values (<= 0 means satisfied)."""

    metrics: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    latency_skipped: str | None = None

    @property
    def feasible(self) -> bool:
        return all(c <= 0 for c in self.constraints.values())


class Evaluator:
    """Scores candidates on one split against the fp32 baseline's accuracy.

    Args:
        split: The validation split (never test).
        num_classes: The dataset's class count.
        evaluation: Latency budget, threads and runtime.
        constraints: Feasibility limits.
        output_name: The class-score output (None: found by its size).
        baseline_accuracy: The fp32 base model's accuracy on ``split`` (None while measuring
            the baseline itself).
        latency_lock: Held while timing (workers on one machine time one at a time).
    """

    def __init__(
        self,
        split: Split,
        num_classes: int,
        evaluation: Evaluation,
        constraints: Constraints,
        output_name: str | None = None,
        *,
        baseline_accuracy: float | None = None,
        latency_lock: AbstractContextManager | None = None,
        measurer: Measurer | None = None,
    ) -> None:
        self.measurer = measurer or Measurer(
            split, num_classes=num_classes, output_name=output_name,
            runtime=evaluation.runtime, threads=evaluation.threads,
        )  # fmt: skip
        self.split, self.num_classes, self.output_name = split, num_classes, output_name
        self.evaluation = evaluation
        self.limits = constraints
        self.baseline_accuracy = baseline_accuracy
        self.latency_lock = latency_lock if latency_lock is not None else contextlib.nullcontext()
        self.plan = LatencyPlan(
            evaluation.batch_sizes, evaluation.warmup, evaluation.repeats, evaluation.min_time_s
        )

    def for_trials(
        self, baseline_accuracy: float, latency_lock: AbstractContextManager | None = None
    ) -> Evaluator:
        """An evaluator for the trials: this one with the baseline and the latency lock (the
        fitted inputs are shared)."""
        return Evaluator(
            self.split, self.num_classes, self.evaluation, self.limits, self.output_name,
            baseline_accuracy=baseline_accuracy, latency_lock=latency_lock,
            measurer=self.measurer,
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
        out.metrics.update(self.measurer.output_metrics(loaded)[0])
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
                out.metrics.update(self.measurer.latency_metrics(loaded, self.plan)[0])
            if self.limits.max_latency_ms is not None:
                out.constraints["latency"] = out.metrics["latency"] - self.limits.max_latency_ms
        check_finite(out.metrics)
        return out

    def _cheap_constraints(self, metrics: dict[str, float]) -> dict[str, float]:
        values = {}
        limits = self.limits
        if limits.max_accuracy_drop is not None and self.baseline_accuracy is not None:
            drop = self.baseline_accuracy - metrics["accuracy"]
            values["accuracy_drop"] = drop - limits.max_accuracy_drop
        if limits.max_size_bytes is not None:
            values["size"] = metrics["size"] - limits.max_size_bytes
        return values
