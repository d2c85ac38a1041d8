"""What onnxruntime really runs: op types of the graph after its optimizer has fused it."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import onnx

from onnxopt.optimizer.evaluate.session import make_session
from onnxopt.optimizer.quantization.labels import INTEGER_KERNELS

__all__ = ["INTEGER_KERNELS", "fused_kernels", "kernel_counts", "optimized_graph"]


def optimized_graph(model: onnx.ModelProto, *, optimization: str = "extended") -> onnx.ModelProto:
    """The model as onnxruntime's CPU provider optimizes it (``extended``: fusions, no layout
    changes, so op types read as the kernels that run)."""
    with tempfile.TemporaryDirectory(prefix="onnxopt-opt-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        make_session(model, optimization=optimization, optimized_model_path=target)
        return onnx.load(str(target))


def kernel_counts(optimized: onnx.ModelProto) -> dict[str, int]:
    """Op type -> count in an optimized graph (from :func:`optimized_graph`)."""
    counts = collections.Counter(n.op_type for n in optimized.graph.node)
    return dict(sorted(counts.items()))


def fused_kernels(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> count in the optimized graph (integer kernels are what quantization buys)."""
    return kernel_counts(optimized_graph(model))
