"""Evaluate one model file on one split: accuracy, loss, latency, size and bit width."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from onnxopt.data.dataset import Split
from onnxopt.optimizer.evaluate.measure import LatencyPlan, Measurer
from onnxopt.optimizer.evaluate.report import EvaluationReport
from onnxopt.runtime import DEFAULT_RUNTIME
from onnxopt.runtime.cpu import integer_path


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
    runtime: str = DEFAULT_RUNTIME,
) -> EvaluationReport:
    """Evaluate a classifier model file on a data split.

    Args:
        model_path: The ``.onnx`` file (external data next to it) or an ``.ort`` file.
        split: Features and labels; flat features are reshaped to the model input.
        threads: Intra-op threads of the session (inter-op 1, sequential).
        batch_sizes: Batch sizes for latency. For a model with a fixed batch size only
            that size can run: the others are left out (that size is measured if none fit).
        measure_latency: Whether to measure latency at all.
        num_classes: The dataset's class count: picks the output and must match it.
        input_name: The features input, when the model has several.
        output_name: The class-score output, when the model has several.
        batch_size: Samples per run when computing accuracy.
        runtime: The backend (:data:`onnxopt.runtime.BACKENDS`).

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        ModelLoadError: Missing or unreadable model, no parameters, bad bit-width metadata.
        DataError: Data that does not fit the model input or output.
        EvaluationError: The runtime refused or failed to run the model.
        UsageError: Bad arguments (threads, batch sizes, names, runtime).
    """
    measurer = Measurer(
        split, num_classes=num_classes, output_name=output_name, input_name=input_name,
        runtime=runtime, threads=threads, batch_size=batch_size,
    )  # fmt: skip
    plan = LatencyPlan(tuple(batch_sizes)) if measure_latency else None
    m = measurer.measure(model_path, latency=plan)
    params = m.loaded.params
    return EvaluationReport(
        model_path=str(model_path),
        accuracy=m.accuracy.accuracy,
        loss=m.accuracy.loss,
        n_samples=m.accuracy.n_samples,
        output_kind=m.accuracy.output_kind,
        latency=m.latency,
        size_bytes=m.loaded.size_bytes,
        parameters=None if params is None else params.parameters,
        average_bitwidth=None if params is None else params.average_bitwidth,
        memory_density=None if params is None else params.memory_density,
        theoretical_size_bytes=None if params is None else params.theoretical_size_bytes,
        threads=threads,
        input_name=m.loaded.io.input_name,
        output_name=m.loaded.io.output_name,
        parameter_tensors=() if params is None else params.tensors,
        predictions=m.accuracy.predictions,
        integer_path=integer_path().as_dict(),
        runtime=runtime,
    )
