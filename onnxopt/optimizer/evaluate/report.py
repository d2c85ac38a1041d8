"""The result of evaluating one model on one split, with a plain-JSON form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxopt.errors import UsageError
from onnxopt.optimizer.evaluate.latency import LatencyResult, LatencyStats
from onnxopt.optimizer.evaluate.size import TensorStat


@dataclass(frozen=True)
class EvaluationReport:
    """Accuracy, latency, size and bit-width metrics of one model on one split.

    Attributes:
        model_path: The evaluated model file.
        accuracy: Top-1 accuracy in [0, 1] (classification; None for other tasks).
        loss: Mean cross-entropy (natural log; classification only).
        n_samples: Samples scored.
        output_kind: "logits" or "probabilities", how a classifier's output was read
            ("values" for other tasks).
        latency: Latency per batch size, or None when not measured.
        size_bytes: Model file plus its external data, in bytes.
        parameters: Parameter elements (see :func:`parameter_stats`); None for an ORT-format
            file (it holds no ONNX graph to read them from), as the three below.
        average_bitwidth: Effective bits per parameter, weighted by element count.
        memory_density: 32 / average_bitwidth.
        theoretical_size_bytes: Sum of parameter bits / 8.
        threads: Intra-op threads the session used.
        input_name: The input fed.
        output_name: The class-score output read.
        parameter_tensors: Per-tensor rows behind the parameter metrics.
        predictions: Predicted class per sample.
        integer_path: This CPU's integer path (:func:`onnxopt.runtime.cpu.integer_path`).
        runtime: The backend that ran the model.
    """

    model_path: str
    accuracy: float | None
    loss: float | None
    n_samples: int
    output_kind: str
    latency: LatencyResult | None
    size_bytes: int
    parameters: int | None
    average_bitwidth: float | None
    memory_density: float | None
    theoretical_size_bytes: float | None
    threads: int
    input_name: str
    output_name: str
    parameter_tensors: tuple[TensorStat, ...] = field(default=(), repr=False, compare=False)
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)
    integer_path: dict[str, Any] = field(default_factory=dict, compare=False)
    runtime: str = "onnxruntime"
    task: str = "classification"
    metrics: dict[str, float] = field(default_factory=dict)
    """Every ``outputs``-tier metric measured (the task's and those asked for)."""
    notes: tuple[str, ...] = ()
    """What was repaired in memory to measure the file (a fixed batch axis freed...)."""

    @property
    def throughput_sps(self) -> float | None:
        """Samples per second at the largest measured batch size (None if not measured)."""
        return None if self.latency is None else self.latency.throughput_sps

    @property
    def throughput_batch_size(self) -> int | None:
        """The batch size of :attr:`throughput_sps` (None if not measured)."""
        return None if self.latency is None else self.latency.throughput_batch_size

    def latency_at(self, batch_size: int) -> LatencyStats:
        """Latency stats of one measured batch size.

        Raises:
            UsageError: When latency was not measured at that batch size.
        """
        if self.latency is None:
            raise UsageError("latency was not measured for this report")
        return self.latency.for_batch(batch_size)

    def to_dict(self, *, tensors: bool = False) -> dict[str, Any]:
        """Plain JSON-able values (no numpy types, no arrays).

        Args:
            tensors: Also include the per-tensor parameter rows under ``parameter_tensors``.
        """
        data: dict[str, Any] = {
            "model_path": self.model_path,
            "task": self.task,
            "accuracy": None if self.accuracy is None else float(self.accuracy),
            "loss": None if self.loss is None else float(self.loss),
            "metrics": {k: float(v) for k, v in self.metrics.items()},
            "notes": list(self.notes),
            "n_samples": int(self.n_samples),
            "output_kind": self.output_kind,
            "latency_ms": None if self.latency is None else self.latency.to_dict(),
            "throughput_sps": self.throughput_sps,
            "throughput_batch_size": self.throughput_batch_size,
            "size_bytes": int(self.size_bytes),
            "parameters": self.parameters,
            "average_bitwidth": self.average_bitwidth,
            "memory_density": self.memory_density,
            "theoretical_size_bytes": self.theoretical_size_bytes,
            "threads": int(self.threads),
            "input_name": self.input_name,
            "output_name": self.output_name,
            "integer_path": dict(self.integer_path),
            "runtime": self.runtime,
        }
        if tensors:
            data["parameter_tensors"] = [t.to_dict() for t in self.parameter_tensors]
        return data
