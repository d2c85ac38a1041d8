"""Measure one candidate: cheap metrics first, latency last (and only when still feasible).

Metrics (validation split): ``accuracy``, ``loss``, ``size`` (serialized bytes, which are the
bytes :func:`~onnxopt.model_io.save_onnx` writes), ``average_bitwidth``, ``memory_density``
and ``latency`` (batch-1 median ms; ``latency_b<N>`` for every measured batch size).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxopt.config.search import Constraints, Evaluation
from onnxopt.data.dataset import Split
from onnxopt.data.shaping import adapt_inputs
from onnxopt.errors import EvaluationError
from onnxopt.optimizer.evaluate import (
    classifier_io,
    evaluate_accuracy,
    measure_latency,
    parameter_stats,
)
from onnxopt.optimizer.evaluate.session import ort_errors, session_options


@dataclass
class Measurement:
    """Metric values of one candidate and named constraint values (<= 0 means satisfied)."""

    metrics: dict[str, float] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    latency_skipped: str | None = None

    @property
    def feasible(self) -> bool:
        return all(c <= 0 for c in self.constraints.values())


class Evaluator:
    """Scores candidates on one split against a baseline accuracy.

    Args:
        split: The validation split (never test).
        num_classes: The dataset's class count.
        evaluation: Latency budget and threads.
        constraints: Feasibility limits.
        baseline_accuracy: The fp32 base model's accuracy on ``split`` (None while measuring
            the baseline itself).
        output_name: The class-score output (None: found by its size).
    """

    def __init__(
        self,
        split: Split,
        num_classes: int,
        evaluation: Evaluation,
        constraints: Constraints,
        baseline_accuracy: float | None = None,
        output_name: str | None = None,
    ) -> None:
        self.split = split
        self.num_classes = num_classes
        self.evaluation = evaluation
        self.limits = constraints
        self.baseline_accuracy = baseline_accuracy
        self.output_name = output_name
        self.latency_lock = contextlib.nullcontext()  # a FileLock when workers share a machine
        self._inputs: dict[tuple, np.ndarray] = {}

    def session(self, data: bytes):
        """An onnxruntime session on serialized model bytes (1 thread by default)."""
        import onnxruntime as ort

        options = session_options(self.evaluation.threads)
        with ort_errors("load the candidate"):
            return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def measure(
        self, model: onnx.ModelProto, *, latency: bool = True, data: bytes | None = None
    ) -> Measurement:
        """All metrics of one model; latency only when the cheap ones are feasible.

        Args:
            model: The candidate.
            latency: Measure latency (when the cheap constraints hold).
            data: ``model`` already serialized, so a trial serializes it once.

        Raises:
            EvaluationError: When onnxruntime refuses the model or a metric is not finite.
        """
        data = data if data is not None else model.SerializeToString()
        session = self.session(data)
        io = classifier_io(session, num_classes=self.num_classes, output_name=self.output_name)
        x = self._x(io)
        acc = evaluate_accuracy(session, io, x, self.split.y, num_classes=self.num_classes)
        params = parameter_stats(model)
        out = Measurement(
            metrics={
                "accuracy": acc.accuracy,
                "loss": acc.loss,
                "size": float(len(data)),
                "average_bitwidth": params.average_bitwidth,
                "memory_density": params.memory_density,
            }
        )
        out.constraints = self._cheap_constraints(out.metrics)
        if not latency:
            out.latency_skipped = "not requested"
        elif not out.feasible:
            out.latency_skipped = "a cheaper constraint is already violated"
            if self.limits.max_latency_ms is not None:
                # keeps one value per constraint; the trial is infeasible through the others
                out.constraints["latency"] = 0.0
        else:
            self._latency(session, io, x, out)
        _check_finite(out.metrics)
        return out

    def _x(self, io) -> np.ndarray:
        key = (io.input_name, io.input_shape, str(io.input_dtype))
        if key not in self._inputs:
            self._inputs[key] = adapt_inputs(
                self.split.x, io.input_shape, dtype=io.input_dtype, input_name=io.input_name
            )
        return self._inputs[key]

    def _latency(self, session, io, x: np.ndarray, out: Measurement) -> None:
        ev = self.evaluation
        sizes = ev.batch_sizes if io.fixed_batch is None else (io.fixed_batch,)
        with self.latency_lock:
            result = measure_latency(
                session, x, batch_sizes=sizes, warmup=ev.warmup, repeats=ev.repeats,
                min_time_s=ev.min_time_s, input_name=io.input_name,
            )  # fmt: skip
        for stats in result.stats:
            out.metrics[f"latency_b{stats.batch_size}"] = stats.median_ms
        out.metrics["latency"] = result.stats[0].median_ms
        if self.limits.max_latency_ms is not None:
            out.constraints["latency"] = out.metrics["latency"] - self.limits.max_latency_ms

    def _cheap_constraints(self, metrics: dict[str, float]) -> dict[str, float]:
        values = {}
        limits = self.limits
        if limits.max_accuracy_drop is not None and self.baseline_accuracy is not None:
            drop = self.baseline_accuracy - metrics["accuracy"]
            values["accuracy_drop"] = drop - limits.max_accuracy_drop
        if limits.max_size_bytes is not None:
            values["size"] = metrics["size"] - limits.max_size_bytes
        return values


def _check_finite(metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise EvaluationError(f"metrics {', '.join(bad)} are not finite (NaN or Inf)")
