"""Honest labels: which quantized widths buy no storage or speed in onnxruntime.

A width narrower than its container is simulated: a 3-bit weight in an int8 container
takes 8 bits on disk and runs the 8-bit kernel. The kernel expectations below were
measured on onnxruntime 1.32 CPU (x86, graph optimization EXTENDED/ALL); the tests assert
the fused op types for the forms the pass emits by default.

Whether a Conv/MatMul fuses also depends on the graph around it: the next layer's input
QuantizeLinear requantizes its output when onnxruntime can move that Q up to it (across a
Relu, MaxPool, Reshape...). :func:`graph_kernels` reads that from the quantized graph and
:func:`agree_with` makes labels and expected kernels agree with the kernels that really run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from onnxopt.optimizer.quantization.qdq_nodes import ActivationQuant
from onnxopt.optimizer.quantization.spec import Container

INTEGER_KERNELS = frozenset(
    {"QGemm", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "QLinearConv",
     "ConvInteger", "DynamicQuantizeMatMul"}
)  # fmt: skip
"""onnxruntime op types that compute a Gemm/MatMul/Conv with integer arithmetic."""

CONV_NEEDS_OUTPUT_Q = "Conv without an 8-bit data_out: QLinearConv needs a quantized output"
NOT_FUSED = "onnxruntime does not fuse it into an integer kernel: it runs DQ + float {op}"

# onnxruntime's QDQPropagationTransformer moves a QuantizeLinear up across these (single
# reader, not a graph output); Identity and inference Dropout are removed before that, and
# ReluQuantFusion drops a Relu right before a Q whose zero point is the type's minimum.
_Q_MOVES_ACROSS = frozenset({"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice"})
_REMOVED = frozenset({"Identity", "Dropout"})
_TYPE_MIN = {onnx.TensorProto.UINT8: 0, onnx.TensorProto.INT8: -128}


@dataclasses.dataclass(frozen=True)
class HonestLabel:
    """One tensor (or a node's kernel) whose nominal width gains nothing in onnxruntime.

    Attributes:
        node: The node name.
        tensor: ``data_in``, ``weight``, ``bias``, ``data_out`` or ``kernel``.
        width: The spec width (None for ``kernel`` labels).
        container: The storage type (None for ``kernel`` labels).
        reason: One line for reports.
    """

    node: str
    tensor: str
    width: int | None
    container: str | None
    reason: str


@dataclasses.dataclass(frozen=True)
class ResolvedNode:
    """The resolved quantization of one node, as the pass emitted it."""

    name: str
    op_type: str
    data_in: ActivationQuant
    weight_width: int
    weight_container: Container
    bias_width: int | None
    float_bias: bool
    data_out: ActivationQuant | None


def _storage_label(node: str, tensor: str, width: int, container: Container) -> HonestLabel | None:
    if width >= container.bits:
        return None
    reason = (
        f"{width}-bit values stored in {container} take {container.bits} bits each: "
        f"no storage or speed gain over {container.bits}-bit"
    )
    return HonestLabel(node, tensor, width, str(container), reason)


def kernel_blockers(node: ResolvedNode) -> list[str]:
    """Why onnxruntime will not fuse the node into an integer kernel (empty when it will)."""
    op = node.op_type
    blockers = []
    if node.data_in.container.bits != 8:
        blockers.append(f"16-bit activations: no integer {op} kernel, runs DQ + float {op}")
    if node.weight_container.bits == 16:
        blockers.append(f"16-bit weights: no integer {op} kernel, runs DQ + float {op}")
    if node.float_bias:
        blockers.append("float bias: only an int32 DequantizeLinear bias fuses")
    if op == "Conv" and (node.data_out is None or node.data_out.container.bits != 8):
        blockers.append(CONV_NEEDS_OUTPUT_Q)
    return blockers


def expected_kernel(node: ResolvedNode) -> str | None:
    """The fused op type onnxruntime is expected to produce, or None."""
    if kernel_blockers(node):
        return None
    if node.op_type == "MatMul":
        out_8bit = node.data_out is not None and node.data_out.container.bits == 8
        return "QLinearMatMul" if out_8bit else "MatMulIntegerToFloat"
    return {"Gemm": "QGemm", "Conv": "QLinearConv"}[node.op_type]


def node_labels(node: ResolvedNode) -> list[HonestLabel]:
    """All honest labels of one quantized node."""
    candidates = [
        _storage_label(node.name, "data_in", node.data_in.width, node.data_in.container),
        _storage_label(node.name, "weight", node.weight_width, node.weight_container),
    ]
    if node.data_out is not None:
        candidates.append(
            _storage_label(node.name, "data_out", node.data_out.width, node.data_out.container)
        )
    if node.bias_width is not None:
        reason = (
            "stored as int32 at the accumulator scale 2**-(f_in + f_w): the width only sets "
            "the rounding grid, no storage or speed gain"
        )
        candidates.append(HonestLabel(node.name, "bias", node.bias_width, "int32", reason))
    labels = [label for label in candidates if label is not None]
    labels += [HonestLabel(node.name, "kernel", None, None, b) for b in kernel_blockers(node)]
    return labels


def _q_is_8bit(q: onnx.NodeProto, constants: Mapping[str, onnx.TensorProto], relu: bool) -> bool:
    """A Q into an 8-bit type; after a Relu its zero point must be the type's minimum."""
    if len(q.input) < 3 or not q.input[2]:
        return True  # no zero point: uint8 with zero point 0
    zp = constants.get(q.input[2])
    if zp is None or zp.data_type not in _TYPE_MIN:
        return False
    return not relu or bool(np.all(numpy_helper.to_array(zp) == _TYPE_MIN[zp.data_type]))


def output_requantized(model: onnx.ModelProto, name: str) -> bool:
    """Whether node ``name``'s output reaches an 8-bit QuantizeLinear that onnxruntime moves
    next to it: directly, after a lone Relu, or across MaxPool/Reshape/Transpose/... (each
    with one reader). That Q (the node's own data_out or the next layer's data_in) lets a
    Conv fuse into QLinearConv and a MatMul into QLinearMatMul.
    """
    graph = model.graph
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    outputs = {o.name for o in graph.output}
    constants = {t.name: t for t in graph.initializer}
    node = next(n for n in graph.node if n.name == name)
    value, relu_allowed, relu = node.output[0], True, False
    while value not in outputs and len(users := readers.get(value, [])) == 1:
        user = users[0]
        if user.op_type == "QuantizeLinear":
            return _q_is_8bit(user, constants, relu)
        if user.op_type == "Relu" and relu_allowed and not relu:
            relu = True
        elif user.op_type in _Q_MOVES_ACROSS:
            relu_allowed = False  # the Relu is dropped only once the Q stands right after it
        elif user.op_type not in _REMOVED:
            return False
        value = user.output[0]
    return False


def graph_kernels(
    model: onnx.ModelProto,
    labels: tuple[HonestLabel, ...],
    expected: Mapping[str, str | None],
) -> dict[str, str | None]:
    """The fused kernel of every quantized node, from the finished quantized graph.

    The pass decides a Conv/MatMul's kernel from its own data_out; a Q of the next layer
    that onnxruntime moves up to the node serves too (see :func:`output_requantized`).
    """
    op_types = {n.name: n.op_type for n in model.graph.node}
    kernels = dict(expected)
    for name, kernel in expected.items():
        blockers = [lbl.reason for lbl in labels if lbl.node == name and lbl.tensor == "kernel"]
        op = op_types.get(name)
        if op == "Conv" and blockers == [CONV_NEEDS_OUTPUT_Q]:
            kernels[name] = "QLinearConv" if output_requantized(model, name) else None
        elif op == "MatMul" and kernel == "MatMulIntegerToFloat":
            if output_requantized(model, name):
                kernels[name] = "QLinearMatMul"
    return kernels


def kernels_in(optimized: onnx.ModelProto, names) -> dict[str, str | None]:
    """Node name -> the integer kernel it became in an onnxruntime-optimized graph, None
    when it still runs as a float op. onnxruntime gives a fused kernel the name of the node
    it replaces; names not found are left out."""
    by_name = {n.name: n.op_type for n in optimized.graph.node if n.name}
    return {
        name: by_name[name] if by_name[name] in INTEGER_KERNELS else None
        for name in names
        if name in by_name
    }


def agree_with(
    labels: tuple[HonestLabel, ...],
    expected: Mapping[str, str | None],
    kernels: Mapping[str, str | None],
    op_types: Mapping[str, str],
) -> tuple[tuple[HonestLabel, ...], dict[str, str | None]]:
    """Labels and expected kernels rewritten to agree with ``kernels`` (node -> fused op).

    A node that fuses loses its kernel labels; one that does not gets one when it had none.
    """
    fused = {name for name, kernel in kernels.items() if kernel is not None}
    out = [lbl for lbl in labels if not (lbl.tensor == "kernel" and lbl.node in fused)]
    explained = {lbl.node for lbl in out if lbl.tensor == "kernel"}
    for name, kernel in kernels.items():
        if kernel is None and name not in explained:
            reason = NOT_FUSED.format(op=op_types.get(name, "op"))
            out.append(HonestLabel(name, "kernel", None, None, reason))
    return tuple(out), {**expected, **{n: k for n, k in kernels.items() if n in expected}}
