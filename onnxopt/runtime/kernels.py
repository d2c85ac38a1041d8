"""Which kernels onnxruntime really runs: computed once, from its own optimized graph.

The QDQ pass can only guess whether onnxruntime will fuse a node (the fusion depends on the
graph around it and on onnxruntime's version). The truth is the graph onnxruntime's
optimizer leaves: a fused node keeps its name as, for example, ``QGemm``. Every report,
label and deployment card reads the kernels from :func:`kernel_facts`; the profiler
(:func:`profiled_kernels`) shows what a run executed, for files that are already optimized
(ORT format).
"""

from __future__ import annotations

import collections
import json
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxopt.runtime.base import ModelSource
from onnxopt.runtime.ort import make_session, quiet_run_options

INTEGER_KERNELS = frozenset(
    {"QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QLinearConv",
     "ConvInteger", "DynamicQuantizeMatMul"}
)  # fmt: skip
"""onnxruntime op types that compute a Gemm/MatMul/Conv with integer arithmetic."""


@dataclass(frozen=True)
class KernelFacts:
    """The kernels of one model as onnxruntime optimizes it.

    Attributes:
        nodes: Node name -> the integer kernel it became, or None when it runs as float.
        counts: Op type -> count over the whole optimized graph.
    """

    nodes: Mapping[str, str | None]
    counts: Mapping[str, int]

    @property
    def integer(self) -> dict[str, int]:
        """The integer kernels and their counts."""
        return {op: n for op, n in self.counts.items() if op in INTEGER_KERNELS}

    def as_dict(self) -> dict[str, dict]:
        """Plain JSON."""
        return {"nodes": dict(self.nodes), "counts": dict(self.counts)}


def optimized_graph(model: ModelSource, *, optimization: str = "extended") -> onnx.ModelProto:
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


def facts_from(optimized: onnx.ModelProto, nodes: Iterable[str]) -> KernelFacts:
    """The facts of ``nodes`` in a graph onnxruntime optimized; names it dropped are left out."""
    by_name = {n.name: n.op_type for n in optimized.graph.node if n.name}
    kernels = {
        name: by_name[name] if by_name[name] in INTEGER_KERNELS else None
        for name in nodes
        if name in by_name
    }
    return KernelFacts(kernels, kernel_counts(optimized))


def kernel_facts(model: ModelSource, nodes: Iterable[str] = ()) -> KernelFacts:
    """What onnxruntime runs ``model`` as: per node in ``nodes``, and counted per op type.

    Raises:
        ModelLoadError, EvaluationError: When onnxruntime cannot load the model.
    """
    return facts_from(optimized_graph(model), nodes)


def profiled_kernels(model: ModelSource, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Op type -> how many nodes of it one run executed, from onnxruntime's profiler.

    Works on any file onnxruntime loads, ``.ort`` included (whose graph is already optimized).
    """
    with tempfile.TemporaryDirectory(prefix="onnxopt-prof-") as tmp:
        session = make_session(model, profile_prefix=Path(tmp) / "profile")
        session.run(None, dict(feeds), quiet_run_options())
        trace = json.loads(Path(session.end_profiling()).read_text())
    ops = collections.Counter(
        event["args"]["op_name"]
        for event in trace
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time")
    )
    return dict(sorted(ops.items()))
