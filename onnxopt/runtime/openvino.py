"""The OpenVINO backend (the ``openvino`` extra): a second CPU runtime for the same files.

OpenVINO reads onnxopt's QDQ models directly and runs their Gemm/MatMul/Conv layers with
u8 integer FullyConnected/Convolution kernels. Sessions are pinned like onnxruntime's: one
stream, a fixed thread count, the latency hint, and float32 inference precision (OpenVINO
would otherwise run float ops in bf16 on CPUs that have it, changing the numerics). Timing
runs reuse one infer request with preset input tensors: a dict of arrays per call would add
conversion work that is not the model's.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from onnxopt.errors import EvaluationError, ModelLoadError, OnnxoptError, UsageError, first_line
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

EXTRA = "openvino"


@contextmanager
def openvino_errors(action: str, error: type[OnnxoptError] = EvaluationError) -> Iterator[None]:
    """Turn OpenVINO failures inside the block into one line of ``error``."""
    try:
        yield
    except OnnxoptError:
        raise
    except (RuntimeError, ValueError, TypeError) as exc:  # OpenVINO raises RuntimeError
        raise error(f"OpenVINO could not {action}: {first_line(exc)}") from exc


@functools.cache
def _core():
    import openvino as ov

    return ov.Core()


def _config(threads: int) -> dict[str, Any]:
    return {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": False,  # a shared machine: let the OS place the threads
    }


def _info(port: Any) -> TensorInfo:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    try:
        dtype = np.dtype(port.get_element_type().to_dtype())
    except (RuntimeError, TypeError, ValueError):
        dtype = None
    return TensorInfo(port.get_any_name(), shape, dtype, str(port.get_element_type()))


class OpenVinoSession(Session):
    """A compiled OpenVINO model behind the :class:`Session` interface."""

    backend = "openvino"

    def __init__(self, compiled: Any, label: str) -> None:
        self.compiled = compiled
        self.label = label
        self.request = compiled.create_infer_request()
        self._describe((_info(p) for p in compiled.inputs), (_info(p) for p in compiled.outputs))

    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        with openvino_errors(f"run {self.label}"):
            results = self.request.infer(dict(feeds))
            by_name = {port.get_any_name(): np.array(value) for port, value in results.items()}
        names = list(outputs) if outputs else [o.name for o in self._outputs]
        return [by_name[name] for name in names]

    def runner(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        import openvino as ov

        for name, array in feeds.items():
            self.request.set_tensor(name, ov.Tensor(np.ascontiguousarray(array)))
        return self.request.infer

    def errors(self, action: str) -> AbstractContextManager[None]:
        return openvino_errors(action)


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU, float32 precision, one stream."""

    name: ClassVar[str] = "openvino"
    extra: ClassVar[str] = EXTRA

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("openvino") is not None

    def load(
        self, model: ModelSource, *, threads: int = 1, graph: onnx.ModelProto | None = None
    ) -> OpenVinoSession:
        check_threads(threads)
        label = model_label(model)
        source: Any
        if is_model_proto(model):
            source = model.SerializeToString()
        elif isinstance(model, bytes):
            source = model
        else:
            path = Path(os.fspath(model))
            if not path.is_file():
                raise ModelLoadError(f"model file {str(path)!r} does not exist; check the path")
            from onnxopt.model_io import ORT_FORMAT_MAGIC

            if path.read_bytes()[4:8] == ORT_FORMAT_MAGIC:
                raise UsageError(
                    f"{path.name} is onnxruntime's ORT format, which OpenVINO cannot read; "
                    "evaluate the .onnx with --runtime openvino"
                )
            source = str(path)
        from onnxopt.runtime.contained import check_loads

        if is_model_proto(model):
            graph = model
        settings = {"backend": self.name, "threads": threads}
        check_loads(source, settings, label=label, structure=graph)
        with openvino_errors(f"load {label}"):
            compiled = _core().compile_model(_core().read_model(source), "CPU", _config(threads))
        return OpenVinoSession(compiled, label)

    def version(self) -> str:
        import openvino as ov

        return str(ov.__version__)


def executed_kernels(session: OpenVinoSession) -> dict[str, int]:
    """``layer type (runtime precision)`` -> count in the compiled model OpenVINO runs."""
    counts: dict[str, int] = {}
    for op in session.compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else ""
        key = f"{kind} ({precision})" if precision else kind
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
