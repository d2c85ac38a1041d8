"""What onnxruntime really runs: op types of the graph after its optimizer has fused it."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import onnx

from onnxopt.optimizer.evaluate.session import make_session

INTEGER_KERNELS = frozenset(
    {"QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QLinearConv",
     "ConvInteger", "DynamicQuantizeMatMul"}
)  # fmt: skip


def optimized_graph(model: onnx.ModelProto, *, optimization: str = "extended") -> onnx.ModelProto:
    """The model as onnxruntime's CPU provider optimizes it (``extended``: fusions, no layout
    changes, so op types read as the kernels that run)."""
    with tempfile.TemporaryDirectory(prefix="onnxopt-opt-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        make_session(model, optimization=optimization, optimized_model_path=target)
        return onnx.load(str(target))


def fused_kernels(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> count in the optimized graph (integer kernels are what quantization buys)."""
    counts = collections.Counter(n.op_type for n in optimized_graph(model).graph.node)
    return dict(sorted(counts.items()))
