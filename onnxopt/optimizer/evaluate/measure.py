"""The measurement pipeline: one way to score a model, used by ``evaluate`` and the search.

A :class:`Measurer` is bound to a split, a task and a runtime. :meth:`Measurer.load` opens a
model (in memory, serialized, or a file) once and fits the split's features to every input
(:class:`~onnxopt.runtime.io.Feeds`); the tiers of :mod:`onnxopt.metrics` are then measured
cheapest first (:meth:`model_metrics`, :meth:`output_metrics`, :meth:`latency_metrics`), so
a caller can stop after a cheap tier (a search trial that is already infeasible is never
timed). Fidelity metrics compare the scored output with a reference model's (the fp32 base
model's) on the same samples: :meth:`with_reference` binds those outputs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxopt.data.dataset import Split
from onnxopt.errors import MetricError, UsageError
from onnxopt.metrics import METRICS, TASKS, MetricInputs, MetricSpec, latency_name, resolve
from onnxopt.model_io import ORT_FORMAT_MAGIC
from onnxopt.optimizer.evaluate.accuracy import (
    AccuracyResult,
    check_class_count,
    class_scores,
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
from onnxopt.runtime.io import Feeds, ModelIO, model_io

if TYPE_CHECKING:
    from onnxopt.exporters.user_model import Preparation


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
        io: Its inputs and scored output.
        feeds: The split's features fitted to every input.
        model: The ONNX graph (None for an ORT-format file, which holds none).
        size_bytes: Bytes on disk (a file and its external data), or serialized bytes.
        source: The file measured, or None for an in-memory model.
        notes: What was repaired in memory to measure the file (a batch axis freed...).
    """

    session: Session
    io: ModelIO
    feeds: Feeds
    model: onnx.ModelProto | None
    size_bytes: int
    source: Path | None = None
    notes: tuple[str, ...] = ()
    _params: ParameterStats | None = field(default=None, repr=False)

    @property
    def params(self) -> ParameterStats | None:
        """Parameter statistics (None without an ONNX graph)."""
        if self._params is None and self.model is not None:
            self._params = parameter_stats(self.model)
        return self._params


@dataclass(frozen=True)
class Scored:
    """The outputs tier of one model: the scored output and, for classifiers, the details."""

    outputs: np.ndarray = field(repr=False)
    accuracy: AccuracyResult | None = None

    @property
    def n_samples(self) -> int:
        return len(self.outputs)


def runnable_batch_sizes(io: ModelIO, batch_sizes: Sequence[int]) -> tuple[int, ...]:
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
        task: A :data:`onnxopt.metrics.TASKS` name: which metrics are measured by default
            and how the output is read.
        metrics: Metric names asked for besides the task's defaults.
        user_metrics: User metrics by name (:func:`onnxopt.metrics.user_metric`).
        num_classes: The dataset's class count (classification): the output must score
            at least this many; it also picks the output among several.
        output_name: The scored output, when the model has several.
        fixed_inputs: Values for model inputs the data do not give.
        runtime: A registered backend (:data:`onnxopt.runtime.BACKENDS`).
        threads: Intra-op threads of every session.
        batch_size: Samples per run for the outputs tier.
        metric_params: Per metric, parameters over its defaults (``top_k_accuracy``: k).
        preparation: The in-memory repairs of ONNX files before they are measured (a fixed
            batch freed, static shapes: :func:`~onnxopt.exporters.user_model.
            prepare_for_measurement`); None measures files exactly as they are.
    """

    def __init__(
        self,
        split: Split,
        *,
        task: str = "classification",
        metrics: Sequence[str] = (),
        user_metrics: Mapping[str, MetricSpec] | None = None,
        num_classes: int | None = None,
        output_name: str | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
        runtime: str = DEFAULT_RUNTIME,
        threads: int = 1,
        batch_size: int = 256,
        metric_params: Mapping[str, Mapping[str, Any]] | None = None,
        preparation: Preparation | None = None,
    ) -> None:
        if task not in TASKS:
            raise UsageError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
        self.split = split
        self.task = task
        self.requested = tuple(metrics)
        self.user_metrics = dict(user_metrics or {})
        self.num_classes = num_classes if task == "classification" else None
        self.output_name = output_name
        self.fixed_inputs = dict(fixed_inputs or {})
        self.backend = get_backend(runtime)
        self.threads = threads
        self.batch_size = batch_size
        self.metric_params = {k: dict(v) for k, v in (metric_params or {}).items()}
        self.preparation = preparation
        self.reference: np.ndarray | None = None
        self._feeds: dict[tuple, Feeds] = {}

    def with_reference(self, outputs: np.ndarray) -> Measurer:
        """This measurer with the reference model's scored outputs on its split bound
        (fidelity metrics compare with them); fitted inputs are shared."""
        if len(outputs) != len(self.split):
            raise UsageError(
                f"the reference has {len(outputs)} outputs for {len(self.split)} samples"
            )
        other = object.__new__(Measurer)
        other.__dict__.update(self.__dict__)
        other.reference = np.asarray(outputs)
        return other

    @property
    def has(self) -> frozenset[str]:
        """What the outputs tier can read: ``labels``, ``targets``, ``reference``."""
        have = set()
        y = self.split.y
        if y is not None:
            have.add("labels" if np.issubdtype(y.dtype, np.integer) else "targets")
        if self.reference is not None:
            have.add("reference")
        return frozenset(have)

    def output_specs(self) -> list[MetricSpec]:
        """The ``outputs``-tier metrics this measurer computes (with configured parameters)."""
        specs = resolve(self.requested, self.task, have=self.has, user=self.user_metrics)
        return [
            replace(s, params={**s.params, **self.metric_params[s.name]})
            if s.name in self.metric_params else s
            for s in specs
        ]  # fmt: skip

    def load(self, model: onnx.ModelProto | Path | str, *, data: bytes | None = None) -> Loaded:
        """Open a model: an in-memory graph (``data``: its serialized bytes, if already made)
        or a file (``.onnx`` with its external data, or ``.ort``).

        Raises:
            ModelLoadError, DataError, EvaluationError, UsageError: As the runtime and the
                input/output discovery raise them.
        """
        source: Path | None = None
        graph: onnx.ModelProto | None
        notes: tuple[str, ...] = ()
        if isinstance(model, onnx.ModelProto):
            data = data if data is not None else model.SerializeToString()
            session = self.backend.load(data, threads=self.threads, graph=model)
            graph, size = model, len(data)
        else:
            source = Path(os.fspath(model))
            ort_format = is_ort_format(source)
            # an ONNX file is read by onnxopt first: its problems get onnxopt's one line
            graph = None if ort_format else load_graph(source)
            size = source.stat().st_size if ort_format else size_on_disk(source)
            run: onnx.ModelProto | Path = source
            if graph is not None and self.preparation is not None:
                from onnxopt.exporters.user_model import prepare_for_measurement

                repaired, notes = prepare_for_measurement(graph, str(source), self.preparation)
                run = repaired if notes else source
            loadable = run.SerializeToString() if isinstance(run, onnx.ModelProto) else run
            session = self.backend.load(loadable, threads=self.threads)
        io = model_io(session, output_name=self.output_name, num_classes=self.num_classes)
        return Loaded(session, io, self._fit(io), graph, size, source, notes)

    def _fit(self, io: ModelIO) -> Feeds:
        key = tuple((i.name, i.shape, str(i.dtype)) for i in io.inputs)
        if key not in self._feeds:
            self._feeds[key] = Feeds(io.inputs, self.split.x, self.fixed_inputs)
        return self._feeds[key]

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
            out[spec.name] = spec.compute(inputs, spec.params)
        return out

    def outputs(self, loaded: Loaded, rows: slice | None = None) -> np.ndarray:
        """The scored output of a loaded model on every sample (a reference, say), or on
        the samples ``rows`` selects."""
        feeds = loaded.feeds if rows is None else loaded.feeds.subset(rows)
        return predict_scores(loaded.session, loaded.io, feeds, batch_size=self.batch_size)

    def output_metrics(
        self, loaded: Loaded, outputs: np.ndarray | None = None
    ) -> tuple[dict[str, float], Scored]:
        """The ``outputs`` tier: one pass over the split (``outputs``: already computed).

        Raises:
            DataError: Labels or class count that do not fit the output.
            EvaluationError: The runtime failed.
            MetricError: A metric is not finite, or a user metric function failed.
        """
        io = loaded.io
        specs = self.output_specs()
        outputs = self.outputs(loaded) if outputs is None else outputs
        accuracy = None
        inputs = MetricInputs(outputs=outputs, reference=self.reference)
        y = self.split.y
        if any("labels" in s.needs for s in specs) or self.task == "classification" and (
            y is not None
        ):
            assert y is not None  # resolve() keeps a metric needing labels only with labels
            check_class_count(outputs, self.num_classes, io.output_name)
            accuracy = classification_metrics(outputs, y, output=io.output_name)
            scores, _ = class_scores(outputs, io.output_name)
            inputs = MetricInputs(
                outputs=outputs, scores=scores, labels=np.asarray(y, np.int64),
                reference=self.reference, log_probabilities=accuracy.log_probabilities,
            )  # fmt: skip
        elif y is not None:
            inputs = MetricInputs(outputs=outputs, targets=y, reference=self.reference)
        metrics = {spec.name: spec.compute(inputs, spec.params) for spec in specs if spec.compute}
        return metrics, Scored(outputs, accuracy)

    def latency_metrics(
        self, loaded: Loaded, plan: LatencyPlan = LatencyPlan()
    ) -> tuple[dict[str, float], LatencyResult]:
        """The ``latency`` tier: median ms per run for every batch size the model can run
        (``latency`` is the first one, ``latency_b<N>`` each)."""
        sizes = runnable_batch_sizes(loaded.io, plan.batch_sizes)
        result = measure_latency(
            loaded.session, loaded.feeds, batch_sizes=sizes, warmup=plan.warmup,
            repeats=plan.repeats, min_time_s=plan.min_time_s,
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
        scored_metrics, scored = self.output_metrics(loaded)
        metrics.update(scored_metrics)
        timing = None
        if latency is not None:
            timed, timing = self.latency_metrics(loaded, latency)
            metrics.update(timed)
        check_finite(metrics)
        return Measurement(metrics, loaded, scored, timing)


@dataclass(frozen=True)
class Measurement:
    """Metric values of one model and what they were computed from."""

    metrics: dict[str, float]
    loaded: Loaded
    scored: Scored
    latency: LatencyResult | None

    @property
    def accuracy(self) -> AccuracyResult | None:
        """Classification details (None for other tasks)."""
        return self.scored.accuracy

    @property
    def outputs(self) -> np.ndarray:
        """The scored output on every sample."""
        return self.scored.outputs


def check_finite(metrics: dict[str, float]) -> None:
    """Refuse NaN or infinite metric values (one line naming them)."""
    bad = [k for k, v in metrics.items() if not np.isfinite(v)]
    if bad:
        raise MetricError(f"metrics {', '.join(bad)} are not finite (NaN or Inf)")

