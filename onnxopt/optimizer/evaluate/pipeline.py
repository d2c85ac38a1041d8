"""Evaluate one model file on one split: accuracy, loss, latency, size and bit width."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnxopt.data.dataset import Split
from onnxopt.data.shaping import adapt_inputs
from onnxopt.errors import UsageError
from onnxopt.optimizer.evaluate.accuracy import evaluate_accuracy
from onnxopt.optimizer.evaluate.latency import LatencyResult
from onnxopt.optimizer.evaluate.latency import measure_latency as _measure_latency
from onnxopt.optimizer.evaluate.report import EvaluationReport
from onnxopt.optimizer.evaluate.session import ClassifierIO, classifier_io, make_session
from onnxopt.optimizer.evaluate.size import load_graph, parameter_stats, size_on_disk
from onnxopt.runtime.cpu import integer_path

if TYPE_CHECKING:
    import onnxruntime as ort


def evaluate_model(
    model_path: Path | str,
    split: Split,
    *,
    threads: int = 1,
    batch_sizes: Sequence[int] = (1, 256),
    measure_latency: bool = True,
    num_classes: int | None = None,
    input_name: str | None = None,
    output_name: str | None = None,
    batch_size: int = 256,
    optimization: str = "all",
) -> EvaluationReport:
    """Evaluate a classifier model file on a data split.

    Args:
        model_path: The ``.onnx`` file (external data next to it).
        split: Features and labels; flat features are reshaped to the model input.
        threads: Intra-op threads of the session (inter-op 1, sequential).
        batch_sizes: Batch sizes for latency. For a model with a fixed batch size only
            that size can run: the others are left out (that size is measured if none fit).
        measure_latency: Whether to measure latency at all.
        num_classes: The dataset's class count: picks the output and must match it.
        input_name: The features input, when the model has several.
        output_name: The class-score output, when the model has several.
        batch_size: Samples per run when computing accuracy.
        optimization: onnxruntime graph optimization level ("disable", "basic",
            "extended", "all").

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        ModelLoadError: Missing or unreadable model, no parameters, bad bit-width metadata.
        DataError: Data that does not fit the model input or output.
        EvaluationError: onnxruntime refused or failed to run the model.
        UsageError: Bad arguments (threads, batch sizes, names, optimization level).
    """
    path = Path(os.fspath(model_path))
    params = parameter_stats(load_graph(path))
    session = make_session(path, threads=threads, optimization=optimization)
    io = classifier_io(
        session, input_name=input_name, output_name=output_name, num_classes=num_classes
    )
    x = adapt_inputs(split.x, io.input_shape, dtype=io.input_dtype, input_name=io.input_name)
    result = evaluate_accuracy(
        session, io, x, split.y, batch_size=batch_size, num_classes=num_classes
    )
    latency = None
    if measure_latency:
        latency = _latency(session, io, x, batch_sizes)
    return EvaluationReport(
        model_path=str(path),
        accuracy=result.accuracy,
        loss=result.loss,
        n_samples=result.n_samples,
        output_kind=result.output_kind,
        latency=latency,
        size_bytes=size_on_disk(path),
        parameters=params.parameters,
        average_bitwidth=params.average_bitwidth,
        memory_density=params.memory_density,
        theoretical_size_bytes=params.theoretical_size_bytes,
        threads=threads,
        input_name=io.input_name,
        output_name=io.output_name,
        parameter_tensors=params.tensors,
        predictions=result.predictions,
        integer_path=integer_path().as_dict(),
    )


def runnable_batch_sizes(io: ClassifierIO, batch_sizes: Sequence[int]) -> tuple[int, ...]:
    """The batch sizes a model can run: all of them, or only its fixed batch size."""
    sizes = tuple(batch_sizes)
    if not sizes:
        raise UsageError("give at least one latency batch size")
    if io.fixed_batch is None:
        return sizes
    return tuple(b for b in sizes if b == io.fixed_batch) or (io.fixed_batch,)


def _latency(
    session: ort.InferenceSession, io: ClassifierIO, x: np.ndarray, batch_sizes: Sequence[int]
) -> LatencyResult:
    sizes = runnable_batch_sizes(io, batch_sizes)
    return _measure_latency(session, x, batch_sizes=sizes, input_name=io.input_name)
