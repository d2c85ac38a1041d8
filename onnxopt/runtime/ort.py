"""The onnxruntime backend: sessions pinned for repeatable measurement, one-line errors.

Every onnxruntime session onnxopt opens is made here (:func:`make_session`), so threading,
logging and numerics settings are the same everywhere, and every onnxruntime failure
becomes one line naming what was being done (:func:`ort_errors`). onnxruntime is imported
inside the functions that need it.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from onnxopt.errors import (
    EvaluationError,
    ModelLoadError,
    OnnxoptError,
    UsageError,
    did_you_mean,
    first_line,
)
from onnxopt.runtime.base import (
    Backend,
    ModelSource,
    Session,
    TensorInfo,
    check_threads,
    is_model_proto,
    model_label,
)

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
"""Names accepted by ``make_session(optimization=...)``, mapped to ORT graph optimization levels."""

_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*")
# onnxruntime fuses DequantizeLinear + MatMul into MatMulNBits and by default (level 4)
# quantizes the activations to int8 inside it: the model would be scored on numerics its
# graph does not describe. Level 1 keeps fp32 activations, so a QDQ graph means what it says.
_MATMULNBITS_ACCURACY = ("session.qdq_matmulnbits_accuracy_level", "1")
_ERROR = 3  # onnxruntime log severities: the session logs errors only, runs nothing
_FATAL = 4
SAFE_OPSET = 21
"""An opset onnxruntime 1.32 CPU has every QDQ kernel for (it has none at opset 28)."""


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
def ort_errors(action: str, error: type[OnnxoptError] = EvaluationError) -> Iterator[None]:
    """Turn onnxruntime failures inside the block into one line of ``error``.

    Args:
        action: What was being done, completing "onnxruntime could not ...".
        error: The onnxopt error to raise (EvaluationError; ExportError or RewriteError
            where a failure means the export or the rewrite failed).
    """
    try:
        yield
    except OnnxoptError:
        raise
    except _ort_exception_types() as exc:
        raise error(f"onnxruntime could not {action}: {ort_error_line(exc)}") from exc


def native_error(exc: BaseException) -> BaseException:
    """The onnxruntime exception behind one of our one-line errors (itself otherwise), for
    callers that quote onnxruntime's own words in a message of theirs."""
    if isinstance(exc, OnnxoptError) and exc.__cause__ is not None:
        return exc.__cause__
    return exc


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

    check_threads(threads)
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
    model: ModelSource,
    *,
    threads: int = 1,
    optimization: str = "all",
    optimized_model_path: Path | None = None,
    config: Mapping[str, str] | None = None,
    profile_prefix: Path | None = None,
    disabled_optimizers: Sequence[str] = (),
    error: type[OnnxoptError] = EvaluationError,
    graph: onnx.ModelProto | None = None,
) -> ort.InferenceSession:
    """An onnxruntime CPU session with fixed threading.

    Args:
        model: A model in memory, serialized bytes, or the path of a model file (external
            data next to it), ``.onnx`` or ``.ort``.
        threads: Intra-op threads; inter-op threads are 1 and execution is sequential.
        optimization: Graph optimization level, one of :data:`OPTIMIZATION_LEVELS`.
        optimized_model_path: Where onnxruntime writes the graph it optimized (to read which
            kernels really run).
        config: Extra session config entries (``session.save_model_format`` ...).
        profile_prefix: Turn on onnxruntime's profiler, writing ``<prefix>_<time>.json``.
        disabled_optimizers: onnxruntime graph transformers not to run.
        error: The error raised when onnxruntime refuses the model.
        graph: The proto of ``model`` when that is its bytes (the crash check keys on it).

    Returns:
        A session on ``CPUExecutionProvider`` only.

    Raises:
        ModelLoadError: When the path does not exist, or onnxruntime is too old for the
            model's IR version or opset.
        error: When onnxruntime refuses the model (invalid graph, missing kernel...).
    """
    import onnxruntime as ort

    options = session_options(threads, optimization)
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    source, label = _model_source(model)
    from onnxopt.runtime.contained import check_loads

    settings = session_settings(threads, optimization, config, disabled_optimizers)
    if is_model_proto(model):
        graph = model
    check_loads(source, settings, label=label, structure=graph)
    try:
        with ort_errors(f"load {label}", error):
            return ort.InferenceSession(
                source, options, providers=["CPUExecutionProvider"],
                disabled_optimizers=list(disabled_optimizers) or None,
            )  # fmt: skip
    except OnnxoptError as exc:
        if exc.__cause__ is None:
            raise
        raise _version_refusal(exc.__cause__, label) or exc from exc.__cause__


def session_settings(
    threads: int = 1,
    optimization: str = "all",
    config: Mapping[str, str] | None = None,
    disabled_optimizers: Sequence[str] = (),
) -> dict[str, Any]:
    """:func:`make_session`'s settings that decide the kernels, as a contained check
    (:mod:`onnxopt.runtime.contained`) opens the model with them."""
    return {"threads": threads, "optimization": optimization, "config": dict(config or {}),
            "disabled_optimizers": tuple(disabled_optimizers)}  # fmt: skip


_IR_REFUSED = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_OPSET_REFUSED = re.compile(r"Opset (\d+) is under development.*? is till opset (\d+)", re.S)
_KERNEL_MISSING = re.compile(r"Could not find an implementation for (\w+)\((\d+)\)")


def _version_refusal(cause: BaseException | None, label: str) -> ModelLoadError | None:
    """A one-line ModelLoadError when onnxruntime refused the model's IR version or opset,
    or has no kernel for an op at a newer opset than :data:`SAFE_OPSET`."""
    text = str(cause or "")
    version = f"onnxruntime {ort_version()}"
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


def ort_version() -> str:
    """The installed onnxruntime's version."""
    import onnxruntime as ort

    return str(ort.__version__)


def _model_source(model: ModelSource) -> tuple[str | bytes, str]:
    if is_model_proto(model):
        return model.SerializeToString(), "the model"
    if isinstance(model, bytes):
        return model, "the model"
    path = Path(os.fspath(model))
    if not path.is_file():
        raise ModelLoadError(f"model file {str(path)!r} does not exist; check the path")
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        # onnxruntime takes paths as UTF-8 strings: read the bytes ourselves (an ONNX file
        # with external data would need its folder, which such a name cannot be given as)
        return path.read_bytes(), path.name.encode("utf-8", "replace").decode()
    return str(path), path.name


_TENSOR_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(bool)": np.bool_,
}  # fmt: skip


def _info(arg: Any) -> TensorInfo:
    dtype = _TENSOR_TYPES.get(arg.type)
    shape = tuple(d if isinstance(d, int | str) else None for d in (arg.shape or []))
    return TensorInfo(arg.name, shape, np.dtype(dtype) if dtype else None, arg.type)


class OrtSession(Session):
    """An onnxruntime session behind the :class:`Session` interface."""

    backend = "onnxruntime"

    def __init__(self, session: ort.InferenceSession, label: str = "the model") -> None:
        self.session = session
        self.label = label
        self._options = quiet_run_options()
        self._describe(map(_info, session.get_inputs()), map(_info, session.get_outputs()))

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        with ort_errors(f"run {self.label}"):
            return self.session.run(list(outputs) if outputs else None, dict(feeds), self._options)

    def runner(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        return functools.partial(self.session.run, None, dict(feeds), self._options)

    def errors(self, action: str) -> AbstractContextManager[None]:
        return ort_errors(action)


class OrtBackend(Backend):
    """onnxruntime's CPU execution provider, every graph optimization on."""

    name: ClassVar[str] = "onnxruntime"

    def load(
        self, model: ModelSource, *, threads: int = 1, graph: onnx.ModelProto | None = None
    ) -> OrtSession:
        session = make_session(model, threads=threads, graph=graph)
        return OrtSession(session, model_label(model))

    def version(self) -> str:
        return ort_version()
