"""The measurement pipeline: one way to score a model, used by ``evaluate`` and the search.

A :class:`Measurer` is bound to a split and a runtime. :meth:`Measurer.load` opens a model
(in memory, serialized, or a file) once; the tiers of :mod:`onnxopt.metrics` are then
measured on it cheapest first (:meth:`model_metrics`, :meth:`output_metrics`,
:meth:`latency_metrics`), so a caller can stop after a cheap tier (a search trial that is
already infeasible is never timed).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt.data.dataset import Split
from onnxopt.data.shaping import adapt_inputs
from onnxopt.errors import DataError, EvaluationError, UsageError
from onnxopt.metrics import METRICS, MetricInputs, latency_name
from onnxopt.model_io import ORT_FORMAT_MAGIC
from onnxopt.optimizer.evaluate.accuracy import (
    AccuracyResult,
    classification_metrics,
    predict_scores,
)
from onnxopt.optimizer.evaluate.latency import LatencyResult, measure_latency
from onnxopt.optimizer.evaluate.size import (
    ParameterStats,
    load_graph,
    parameter_stats,
    size_on_disk,
)
from onnxopt.runtime import DEFAULT_RUNTIME, Session, get_backend
from onnxopt.runtime.io import ClassifierIO, classifier_io


@dataclass(frozen=True)
class LatencyPlan:
    """Which batch sizes to time and how long (None: the default budget per batch size)."""

    batch_sizes: tuple[int, ...] = (1, 256)
    warmup: int | None = None
    repeats: int | None = None
    min_time_s: float | None = None


@dataclass
class Loaded:
    """A model opened for measurement.

    Attributes:
        session: The runtime session.
        io: Its features input and class-score output.
        x: The split's features fitted to the input.
        model: The ONNX graph (None for an ORT-format file, which holds none).
        size_bytes: Bytes on disk (a file and its external data), or serialized bytes.
        source: The file measured, or None for an in-memory model.
    """

    session: Session
    io: ClassifierIO
    x: np.ndarray
    model: onnx.ModelProto | None
    size_bytes: int
    source: Path | None = None
    _params: ParameterStats | None = field(default=None, repr=False)

    @property
    def params(self) -> ParameterStats | None:
        """Parameter statistics (None without an ONNX graph)."""
        if self._params is None and self.model is not None:
            self._params = parameter_stats(self.model)
        return self._params


def runnable_batch_sizes(io: ClassifierIO, batch_sizes: Sequence[int]) -> tuple[int, ...]:
    """The batch sizes a model can run: all of them, or only its fixed batch size."""
    sizes = tuple(batch_sizes)
    if not sizes:
        raise UsageError("give at least one latency batch size")
    if io.fixed_batch is None:
        return sizes
    return tuple(b for b in sizes if b == io.fixed_batch) or (io.fixed_batch,)


def is_ort_format(path: Path) -> bool:
    """Whether a file is onnxruntime's ORT format (a FlatBuffer tagged ``ORTM``)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return head[4:8] == ORT_FORMAT_MAGIC


class Measurer:
    """Scores models on one split with one runtime.

    Args:
        split: Features and labels (validation for a search, any split for ``evaluate``).
        num_classes: The dataset's class count: picks the output, must match it.
        output_name: The class-score output, when the model has several.
        input_name: The features input, when the model has several.
        runtime: A registered backend (:data:`onnxopt.runtime.BACKENDS`).
        threads: Intra-op threads of every session.
        batch_size: Samples per run for the output tier.
    """

    def __init__(
        self,
        split: Split,
        *,
        num_classes: int | None = None,
        output_name: str | None = None,
        input_name: str | None = None,
        runtime: str = DEFAULT_RUNTIME,
        threads: int = 1,
        batch_size: int = 256,
    ) -> None:
        self.split = split
        self.num_classes = num_classes
        self.output_name = output_name
        self.input_name = input_name
        self.backend = get_backend(runtime)
        self.threads = threads
        self.batch_size = batch_size
        self._inputs: dict[tuple, np.ndarray] = {}

    def load(self, model: onnx.ModelProto | Path | str, *, data: bytes | None = None) -> Loaded:
        """Open a model: an in-memory graph (``data``: its serialized bytes, if already made)
        or a file (``.onnx`` with its external data, or ``.ort``).

        Raises:
            ModelLoadError, DataError, EvaluationError, UsageError: As the runtime and the
                input/output discovery raise them.
        """
        source: Path | None = None
        if isinstance(model, onnx.ModelProto):
            data = data if data is not None else model.SerializeToString()
            session = self.backend.load(data, threads=self.threads)
            graph, size = model, len(data)
        else:
            source = Path(os.fspath(model))
            ort_format = is_ort_format(source)
            # an ONNX file is read by onnxopt first: its problems get onnxopt's one line
            graph = None if ort_format else load_graph(source)
            size = source.stat().st_size if ort_format else size_on_disk(source)
            session = self.backend.load(source, threads=self.threads)
        io = classifier_io(
            session, input_name=self.input_name, output_name=self.output_name,
            num_classes=self.num_classes,
        )  # fmt: skip
        return Loaded(session, io, self._x(io), graph, size, source)

    def _x(self, io: ClassifierIO) -> np.ndarray:
        key = (io.input_name, io.input_shape, str(io.input_dtype))
        if key not in self._inputs:
            self._inputs[key] = adapt_inputs(
                self.split.x, io.input_shape, dtype=io.input_dtype, input_name=io.input_name
            )
        return self._inputs[key]

    def model_metrics(self, loaded: Loaded) -> dict[str, float]:
        """The ``model`` tier: size, and bit widths when the file holds an ONNX graph."""
        params = loaded.params
        inputs = MetricInputs(
            size_bytes=loaded.size_bytes,
            average_bitwidth=None if params is None else params.average_bitwidth,
        )
        out = {}
        for spec in METRICS.values():
            if spec.tier != "model" or spec.compute is None:
                continue
            if spec.name != "size" and params is None:
                continue  # an ORT-format file: no graph to read bit widths from
            out[spec.name] = spec.compute(inputs)
        return out

    def output_metrics(self, loaded: Loaded) -> tuple[dict[str, float], AccuracyResult]:
        """The ``outputs`` tier: one pass over the split.

        Raises:
            DataError: Labels or class count that do not fit the output.
            EvaluationError: The runtime failed or the scores are not finite.
        """
        io = loaded.io
        scores = predict_scores(loaded.session, io, loaded.x, batch_size=self.batch_size)
        if self.num_classes is not None and scores.shape[1] != self.num_classes:
            raise DataError(
                f"model output {io.output_name!r} scores {scores.shape[1]} classes but the "
                f"dataset has {self.num_classes}; use data that matches the model"
            )
        result = classification_metrics(scores, self.split.y, output=io.output_name)
        inputs = MetricInputs(
            scores=scores, labels=np.asarray(self.split.y, np.int64),
            log_probabilities=result.log_probabilities,
        )  # fmt: skip
        metrics = {
            spec.name: spec.compute(inputs)
            for spec in METRICS.values()
            if spec.tier == "outputs" and spec.compute is not None
        }
        return metrics, result

    def latency_metrics(
        self, loaded: Loaded, plan: LatencyPlan = LatencyPlan()
    ) -> tuple[dict[str, float], LatencyResult]:
        """The ``latency`` tier: median ms per run for every batch size the model can run
        (``latency`` is the first one, ``latency_b<N>`` each)."""
        sizes = runnable_batch_sizes(loaded.io, plan.batch_sizes)
        result = measure_latency(
            loaded.session, loaded.x, batch_sizes=sizes, warmup=plan.warmup,
            repeats=plan.repeats, min_time_s=plan.min_time_s, input_name=loaded.io.input_name,
        )  # fmt: skip
        metrics = {latency_name(s.batch_size): s.median_ms for s in result.stats}
        metrics["latency"] = result.stats[0].median_ms
        return metrics, result

    def measure(
        self,
        model: onnx.ModelProto | Path | str,
        *,
        latency: LatencyPlan | None = LatencyPlan(),
        data: bytes | None = None,
    ) -> Measurement:
        """Every tier (latency skipped when ``latency`` is None), cheapest first."""
        loaded = self.load(model, data=data)
        metrics = self.model_metrics(loaded)
        scored, accuracy = self.output_metrics(loaded)
        metrics.update(scored)
        timing = None
        if latency is not None:
            timed, timing = self.latency_metrics(loaded, latency)
            metrics.update(timed)
        check_finite(metrics)
        return Measurement(metrics, loaded, accuracy, timing)


@dataclass(frozen=True)
class Measurement:
    """Metric values of one model and what they were computed from."""

    metrics: dict[str, float]
    loaded: Loaded
    accuracy: AccuracyResult
    latency: LatencyResult | None

    def details(self) -> dict[str, Any]:
        """The non-metric facts reports show (samples, how the output was read)."""
        return {"n_samples": self.accuracy.n_samples, "output_kind": self.accuracy.output_kind}


def check_finite(metrics: dict[str, float]) -> None:
    """Refuse NaN or infinite metric values (one line naming them)."""
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise EvaluationError(f"metrics {', '.join(bad)} are not finite (NaN or Inf)")
