"""Does the runtime compute a fixed-point model exactly on this CPU?

The reference is onnx's numpy :class:`~onnx.reference.ReferenceEvaluator` on the same QDQ
graph, with Gemm, MatMul and Conv accumulating in float64: every DequantizeLinear output
is an integer times a power of two, so float64 sums are exact (below 2**53 steps) and one
rounding to float32 at the end is what an int32 integer kernel does when it converts its
accumulator. Quantize/DequantizeLinear follow the ONNX definition (round half to even,
saturate), which is onnxopt's fixed-point semantics. The runtime side is onnxruntime with
every optimization on, the kernels the model ships with.

Float ops outside the fixed-point layers (Softmax, Sigmoid, ReduceMean...) may differ in
the last bit between numpy and onnxruntime; the report lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt.errors import EvaluationError, UsageError
from onnxopt.optimizer.quantization.metadata import TARGET_CPU_KEY, metadata_value

# float ops whose numpy and onnxruntime results may round differently
INEXACT_FLOAT_OPS = frozenset(
    {"Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Exp", "Log", "Erf", "Gelu", "HardSwish",
     "ReduceMean", "ReduceSum", "GlobalAveragePool", "AveragePool", "LayerNormalization",
     "BatchNormalization", "InstanceNormalization", "Div", "Sqrt", "Pow", "Softplus",
     "DynamicQuantizeLinear"}  # its scale is a float division of the batch's range
)  # fmt: skip
_ACCUMULATING = ("Gemm", "MatMul", "Conv")


def _float64_op(base: type) -> type:
    """``base`` (a reference op) run on float64 copies of its float inputs, output float32."""

    def _run(self, *inputs, **attrs):
        wide = [x.astype(np.float64) if _is_float32(x) else x for x in inputs]
        return tuple(np.asarray(y).astype(np.float32) for y in base._run(self, *wide, **attrs))

    return type(base.__name__.split("_")[0], (base,), {"_run": _run, "op_domain": ""})


def _is_float32(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.float32


def _exact_ops() -> list[type]:
    from onnx.reference.ops.op_conv import Conv
    from onnx.reference.ops.op_gemm import Gemm_7
    from onnx.reference.ops.op_matmul import MatMul

    return [_float64_op(op) for op in (Gemm_7, MatMul, Conv)]


def reference_outputs(
    model: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]
) -> list[np.ndarray]:
    """The fixed-point reference outputs ``names`` of ``model`` for ``feeds``."""
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model, new_ops=_exact_ops())
    try:
        return list(evaluator.run(names, feeds))
    except Exception as exc:  # the reference raises whatever numpy raises
        raise EvaluationError(
            f"onnx's reference evaluator cannot run the model ({type(exc).__name__}: {exc})"
        ) from None


@dataclass(frozen=True)
class VerifyReport:
    """How the runtime's outputs compare with the fixed-point reference.

    Attributes:
        outputs: Output names compared.
        elements: Output values compared.
        exact: Values equal to the reference (bitwise, as float32).
        max_abs_diff: Largest |runtime - reference|.
        first_mismatch: ``(output, sample index)`` of the first difference, or None.
        samples: Samples fed.
        integer_path: This CPU's integer path (:func:`onnxopt.runtime.cpu.integer_path`).
        target_cpu: The CPU class the model's weights were stored for (its metadata).
        inexact_float_ops: Float ops in the graph whose last bit may differ anyway.
    """

    outputs: tuple[str, ...]
    elements: int
    exact: int
    max_abs_diff: float
    first_mismatch: tuple[str, int] | None
    samples: int
    integer_path: dict[str, Any]
    target_cpu: str | None
    inexact_float_ops: tuple[str, ...] = field(default=())

    @property
    def match_rate(self) -> float:
        return self.exact / self.elements if self.elements else 1.0

    @property
    def is_exact(self) -> bool:
        return self.exact == self.elements

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {
            "outputs": list(self.outputs),
            "elements": self.elements,
            "exact": self.exact,
            "match_rate": self.match_rate,
            "max_abs_diff": self.max_abs_diff,
            "first_mismatch": list(self.first_mismatch) if self.first_mismatch else None,
            "samples": self.samples,
            "integer_path": self.integer_path,
            "target_cpu": self.target_cpu,
            "inexact_float_ops": list(self.inexact_float_ops),
        }


def compare(
    got: list[np.ndarray], want: list[np.ndarray], names: list[str]
) -> tuple[int, int, float, tuple[str, int] | None]:
    """``(elements, exact, max |diff|, first mismatch)`` of runtime vs reference outputs; the
    mismatch is ``(output name, index along the first axis)``."""
    elements = exact = 0
    worst, first = 0.0, None
    for name, g, w in zip(names, got, want, strict=True):
        g = np.asarray(g)
        w = np.asarray(w).astype(g.dtype)
        if g.shape != w.shape:
            raise EvaluationError(
                f"output {name!r}: the runtime gives shape {list(g.shape)}, the reference "
                f"{list(w.shape)}"
            )
        same = (g == w) | (np.isnan(g) & np.isnan(w)) if g.dtype.kind == "f" else g == w
        elements += same.size
        exact += int(same.sum())
        if not same.all():
            diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
            worst = max(worst, float(np.nanmax(diff)))
            if first is None:
                first = (name, int(np.argwhere(~same)[0][0]) if same.ndim else 0)
    return elements, exact, worst, first


def verify_model(
    path,
    x,
    *,
    threads: int = 1,
    batch_size: int = 256,
    runtime: str = "onnxruntime",
    fixed_inputs: Mapping[str, Any] | None = None,
) -> VerifyReport:
    """Run the model file on a runtime (every optimization on) and in the fixed-point
    reference on features ``x`` (one array, or one per input name), and compare every value
    of every output.

    Raises:
        ModelLoadError, DataError, EvaluationError: As :func:`evaluate_model`.
    """
    from onnxopt.model_io import load_onnx
    from onnxopt.runtime import get_backend
    from onnxopt.runtime.cpu import integer_path
    from onnxopt.runtime.io import Feeds, model_io

    model = load_onnx(path)
    if not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        raise UsageError(
            f"{Path(path).name} has no quantized tensors (no DequantizeLinear); verify compares "
            "a fixed-point model with its reference: quantize it first (onnxopt quantize)"
        )
    session = get_backend(runtime).load(path, threads=threads)
    io = model_io(session, output_name=session.outputs[0].name)
    feeds = Feeds(io.inputs, x, fixed_inputs)
    names = [o.name for o in session.outputs]
    step = io.fixed_batch or batch_size
    totals: list = [0, 0, 0.0, None]
    for start in range(0, len(feeds), step):
        if io.fixed_batch and len(feeds) - start < io.fixed_batch:
            break  # a fixed-batch model runs only full batches
        batch = feeds.batch(start, start + step)
        got = session.run(batch, names)
        elements, exact, worst, first = compare(got, reference_outputs(model, batch, names), names)
        totals[0] += elements
        totals[1] += exact
        totals[2] = max(totals[2], worst)
        if totals[3] is None and first is not None:
            totals[3] = (first[0], start + first[1])
    ops = sorted({n.op_type for n in model.graph.node} & INEXACT_FLOAT_OPS)
    return VerifyReport(
        outputs=tuple(names),
        elements=int(totals[0]),
        exact=int(totals[1]),
        max_abs_diff=float(totals[2]),
        first_mismatch=totals[3],
        samples=len(feeds),
        integer_path=integer_path().as_dict(),
        target_cpu=metadata_value(model, TARGET_CPU_KEY),
        inexact_float_ops=tuple(ops),
    )
