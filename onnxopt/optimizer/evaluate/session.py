"""onnxruntime sessions pinned for repeatable measurement, and a classifier's input and output.

onnxruntime is imported inside the functions that need it, so importing this package (for
example only to compute sizes) never loads it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from onnxopt.errors import (
    DataError,
    EvaluationError,
    ModelLoadError,
    UsageError,
    did_you_mean,
    first_line,
)

if TYPE_CHECKING:
    import onnxruntime as ort

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
"""Names accepted by ``make_session(optimization=...)``, mapped to ORT graph optimization levels."""

INPUT_DTYPES = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
}
"""The model input types evaluation can feed, as onnxruntime spells them."""

_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*")
# onnxruntime fuses DequantizeLinear + MatMul into MatMulNBits and by default (level 4)
# quantizes the activations to int8 inside it: the model would be scored on numerics its
# graph does not describe. Level 1 keeps fp32 activations, so a QDQ graph means what it says.
_MATMULNBITS_ACCURACY = ("session.qdq_matmulnbits_accuracy_level", "1")
_ERROR = 3  # onnxruntime log severities: the session logs errors only, runs nothing
_FATAL = 4


@dataclass(frozen=True)
class ClassifierIO:
    """The one input a classifier is fed and the output holding its class scores.

    Attributes:
        input_name: Name of the features input.
        input_shape: Input shape with the batch dimension symbolic (a string); other
            dimensions are ints or symbolic names.
        input_dtype: numpy dtype the input expects (float32, float16 or float64).
        output_name: Name of the class-score output.
        num_classes: Static size of the output's last dimension, or None when symbolic.
        fixed_batch: The batch size the model is fixed to, or None when the batch is dynamic.
    """

    input_name: str
    input_shape: tuple[int | str, ...]
    input_dtype: np.dtype
    output_name: str
    num_classes: int | None
    fixed_batch: int | None = None


def ort_error_line(exc: BaseException) -> str:
    """The first line of an onnxruntime error, without the ``[ONNXRuntimeError] : N :`` prefix."""
    return _ORT_PREFIX.sub("", first_line(exc, 10_000)).replace(" : ", ": ", 1)


@functools.cache
def _ort_exception_types() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    native = [v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception)]
    # The Python layer of onnxruntime raises these for bad feeds (missing inputs, wrong types).
    return (*native, RuntimeError, ValueError, TypeError)


@contextmanager
def ort_errors(action: str) -> Iterator[None]:
    """Turn onnxruntime failures inside the block into a one-line :class:`EvaluationError`.

    Args:
        action: What was being done, completing "onnxruntime could not ...".

    Raises:
        EvaluationError: When onnxruntime raised inside the block.
    """
    try:
        yield
    except _ort_exception_types() as exc:
        raise EvaluationError(f"onnxruntime could not {action}: {ort_error_line(exc)}") from exc


def quiet_run_options() -> ort.RunOptions:
    """Run options that keep onnxruntime from printing errors we re-raise anyway."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = _FATAL
    return options


def session_options(threads: int = 1, optimization: str = "all") -> ort.SessionOptions:
    """Session options for repeatable CPU measurement.

    Fused DequantizeLinear + MatMul kernels keep fp32 activations, so quantized graphs are
    scored on the numerics they describe (onnxruntime would otherwise quantize activations).

    Args:
        threads: Intra-op threads (fixed; inter-op is 1 and execution sequential).
        optimization: One of :data:`OPTIMIZATION_LEVELS`.

    Raises:
        UsageError: For a non-positive thread count or an unknown optimization level.
    """
    import onnxruntime as ort

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be a positive integer, got {threads!r}")
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        hint = did_you_mean(str(optimization), levels)
        raise UsageError(f"unknown optimization level {optimization!r}; {hint}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = levels[optimization]
    options.log_severity_level = _ERROR
    options.add_session_config_entry(*_MATMULNBITS_ACCURACY)
    return options


def make_session(
    model: onnx.ModelProto | Path | str,
    *,
    threads: int = 1,
    optimization: str = "all",
    optimized_model_path: Path | None = None,
) -> ort.InferenceSession:
    """An onnxruntime CPU session with fixed threading.

    Args:
        model: A model in memory or the path of a model file (external data next to it).
        threads: Intra-op threads; inter-op threads are 1 and execution is sequential.
        optimization: Graph optimization level, one of :data:`OPTIMIZATION_LEVELS`.
        optimized_model_path: Where onnxruntime writes the graph it optimized (to read which
            kernels really run).

    Returns:
        A session on ``CPUExecutionProvider`` only.

    Raises:
        ModelLoadError: When the path does not exist, or onnxruntime is too old for the
            model's IR version or opset.
        EvaluationError: When onnxruntime refuses the model (invalid graph, missing kernel...).
    """
    import onnxruntime as ort

    options = session_options(threads, optimization)
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    source, label = _model_source(model)
    try:
        with ort_errors(f"load {label}"):
            return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except EvaluationError as exc:
        raise _version_refusal(exc.__cause__, label) or exc from exc.__cause__


_IR_REFUSED = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_OPSET_REFUSED = re.compile(r"Opset (\d+) is under development.*? is till opset (\d+)", re.S)
_KERNEL_MISSING = re.compile(r"Could not find an implementation for (\w+)\((\d+)\)")
SAFE_OPSET = 21
"""An opset onnxruntime 1.32 CPU has every QDQ kernel for (it has none at opset 28)."""


def _version_refusal(cause: BaseException | None, label: str) -> ModelLoadError | None:
    """A one-line ModelLoadError when onnxruntime refused the model's IR version or opset,
    or has no kernel for an op at a newer opset than :data:`SAFE_OPSET`."""
    text = str(cause or "")
    version = f"onnxruntime {_ort_version()}"
    if match := _IR_REFUSED.search(text):
        have, top = match.groups()
        return ModelLoadError(
            f"{label} has IR version {have} but {version} reads up to IR version {top}; "
            f"re-export with an older exporter or IR version (<= {top}), or upgrade onnxruntime"
        )
    if match := _OPSET_REFUSED.search(text):
        have, top = match.groups()
        return ModelLoadError(
            f"{label} uses opset {have} but {version} supports up to opset {top}; "
            "re-export at opset 21, or upgrade onnxruntime"
        )
    if (match := _KERNEL_MISSING.search(text)) and int(match.group(2)) > SAFE_OPSET:
        op, since = match.groups()
        return ModelLoadError(
            f"{label} uses {op}({since}), for which {version} has no CPU kernel; convert the "
            f"model to opset {SAFE_OPSET} first: onnxopt export MODEL.onnx --opset {SAFE_OPSET} "
            f"-o MODEL-op{SAFE_OPSET}.onnx"
        )
    return None


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def _model_source(model: onnx.ModelProto | Path | str) -> tuple[str | bytes, str]:
    if isinstance(model, onnx.ModelProto):
        return model.SerializeToString(), "the model"
    path = Path(os.fspath(model))
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist; check the path")
    return str(path), path.name


def classifier_io(
    session: ort.InferenceSession,
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    num_classes: int | None = None,
) -> ClassifierIO:
    """Find the features input and the class-score output of a classifier session.

    Args:
        session: The session to inspect.
        input_name: The features input; required when the model has several inputs.
        output_name: The class-score output; required when several outputs remain ambiguous.
        num_classes: When given, picks the only output whose last dimension has this size.

    Raises:
        ModelLoadError: When the model has several inputs and ``input_name`` is not given.
        UsageError: When the class-score output is ambiguous (the message lists the outputs),
            or ``input_name`` / ``output_name`` is not in the model.
        DataError: When the input is not a float tensor with a batch dimension.
    """
    node = _pick_input(session.get_inputs(), input_name)
    dtype = INPUT_DTYPES.get(node.type)
    if dtype is None:
        raise DataError(
            f"model input {node.name!r} has type {node.type}; evaluation feeds float inputs "
            f"({', '.join(INPUT_DTYPES)}): re-export the model with a float input"
        )
    shape = list(node.shape or [])
    if not shape:
        raise DataError(
            f"model input {node.name!r} has no batch dimension (shape {shape}); re-export it "
            "with the batch as its first dimension"
        )
    batch = shape[0]
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    shape[0] = batch if isinstance(batch, str) and batch else "batch"
    out = _pick_output(session.get_outputs(), output_name, num_classes)
    last = out.shape[-1] if out.shape else None
    return ClassifierIO(
        input_name=node.name,
        input_shape=tuple(shape),
        input_dtype=dtype,
        output_name=out.name,
        num_classes=last if isinstance(last, int) else None,
        fixed_batch=fixed,
    )


def _pick_input(inputs: list[Any], name: str | None) -> Any:
    if name is not None:
        return _by_name(inputs, name, "input")
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise ModelLoadError(
            f"model has {len(inputs)} inputs ({names}); onnxopt feeds a classifier one tensor "
            "of features: re-export the model with a single input (input_name picks one "
            "when the others have defaults)"
        )
    return inputs[0]


def _pick_output(outputs: list[Any], name: str | None, num_classes: int | None) -> Any:
    if name is not None:
        return _by_name(outputs, name, "output")
    if len(outputs) == 1:
        return outputs[0]
    listed = ", ".join(f"{o.name!r} {list(o.shape or [])}" for o in outputs)
    how = "name the class-score output with --output-name (output_name in Python)"
    if num_classes is not None:
        fits = [o for o in outputs if o.shape and o.shape[-1] == num_classes]
        if len(fits) == 1:
            return fits[0]
        raise UsageError(
            f"{len(fits)} of the model's outputs ({listed}) end in {num_classes} classes; {how}"
        )
    raise UsageError(f"model has {len(outputs)} outputs ({listed}); {how} or give num_classes")


def _by_name(args: list[Any], name: str, kind: str) -> Any:
    for arg in args:
        if arg.name == name:
            return arg
    hint = did_you_mean(name, [a.name for a in args])
    raise UsageError(f"model has no {kind} named {name!r}; {hint}")
