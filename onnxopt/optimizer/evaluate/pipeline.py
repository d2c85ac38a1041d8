"""Evaluate one model file on one split: task metrics, latency, size and bit width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxopt.data.dataset import Split
from onnxopt.exporters.user_model import DEFAULTS, Preparation
from onnxopt.metrics import MetricSpec
from onnxopt.optimizer.evaluate.measure import LatencyPlan, Measurer
from onnxopt.optimizer.evaluate.report import EvaluationReport
from onnxopt.runtime import DEFAULT_RUNTIME
from onnxopt.runtime.contained import stage
from onnxopt.runtime.cpu import integer_path


def evaluate_model(
    model_path: Path | str,
    split: Split,
    *,
    threads: int = 1,
    batch_sizes: Sequence[int] = (1, 256),
    measure_latency: bool = True,
    num_classes: int | None = None,
    output_name: str | None = None,
    batch_size: int = 256,
    runtime: str = DEFAULT_RUNTIME,
    task: str = "classification",
    metrics: Sequence[str] = (),
    user_metrics: Mapping[str, MetricSpec] | None = None,
    reference: Path | str | None = None,
    fixed_inputs: Mapping[str, Any] | None = None,
    preparation: Preparation | None = DEFAULTS,
) -> EvaluationReport:
    """Evaluate a model file on a data split.

    Args:
        model_path: The ``.onnx`` file (external data next to it) or an ``.ort`` file.
        split: Features and labels; features are fitted to the model's inputs.
        threads: Intra-op threads of the session (inter-op 1, sequential).
        batch_sizes: Batch sizes for latency. For a model with a fixed batch size only
            that size can run: the others are left out (that size is measured if none fit).
        measure_latency: Whether to measure latency at all.
        num_classes: The dataset's class count (classification).
        output_name: The scored output, when the model has several.
        batch_size: Samples per run for the task metrics.
        runtime: The backend (:data:`onnxopt.runtime.BACKENDS`).
        task: What the model does (:data:`onnxopt.metrics.TASKS`): its default metrics.
        metrics: Metrics to measure besides the task's.
        user_metrics: User metrics by name.
        reference: A reference model (the fp32 original) for fidelity metrics.
        fixed_inputs: Values for model inputs the data do not give.
        preparation: In-memory repairs before measuring (a fixed batch axis freed, static
            shapes); None measures the file exactly as it is.

    Returns:
        An :class:`EvaluationReport`.

    Raises:
        ModelLoadError: Missing or unreadable model, no parameters, bad bit-width metadata.
        DataError: Data that does not fit the model's inputs or output.
        EvaluationError: The runtime refused or failed to run the model.
        UsageError: Bad arguments (threads, batch sizes, names, runtime, metrics).
    """
    measurer = Measurer(
        split, task=task, metrics=metrics, user_metrics=user_metrics, num_classes=num_classes,
        output_name=output_name, fixed_inputs=fixed_inputs, runtime=runtime, threads=threads,
        batch_size=batch_size, preparation=preparation,
    )  # fmt: skip
    if reference is not None:
        base = measurer.load(reference)
        measurer = measurer.with_reference(measurer.outputs(base))
    plan = LatencyPlan(tuple(batch_sizes)) if measure_latency else None
    with stage(f"measuring {model_path}"):
        m = measurer.measure(model_path, latency=plan)
    params = m.loaded.params
    accuracy = m.accuracy
    return EvaluationReport(
        model_path=str(model_path),
        accuracy=None if accuracy is None else accuracy.accuracy,
        loss=None if accuracy is None else accuracy.loss,
        n_samples=m.scored.n_samples,
        output_kind="values" if accuracy is None else accuracy.output_kind,
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
        predictions=None if accuracy is None else accuracy.predictions,
        integer_path=integer_path().as_dict(),
        runtime=runtime,
        task=task,
        metrics={k: v for k, v in m.metrics.items() if _is_output_metric(k, measurer)},
        notes=m.loaded.notes,
    )


def _is_output_metric(name: str, measurer: Measurer) -> bool:
    return name in {s.name for s in measurer.output_specs()}
