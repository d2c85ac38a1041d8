"""Read-only questions the QDQ pass asks of a graph: support, layouts, constants, signs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt.graph import const_array

SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "Gather")
DYNAMIC_OPS = ("Gemm", "MatMul")
"""Ops quantized with dynamic activations (``DynamicQuantizeLinear`` -> ``MatMulInteger``)."""

# Ops whose output is non-negative whatever their input.
_NONNEG_OPS = frozenset({"Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus", "HardSigmoid"})
# Ops whose output is non-negative when their first input is: pooling, reductions, layout.
_SIGN_PRESERVING_OPS = frozenset(
    {
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
        "Transpose", "Identity", "Squeeze", "Unsqueeze", "Slice", "Gather", "Max", "Expand",
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "Split", "Tile",
    }
)  # fmt: skip
_UNSIGNED_TYPES = frozenset(
    {ir.DataType.UINT2, ir.DataType.UINT4, ir.DataType.UINT8, ir.DataType.UINT16}
)
_MAX_DEPTH = 64


def _all_const(value: ir.Value | None, predicate) -> bool:
    array = const_array(value)
    return array is not None and bool(np.all(predicate(array)))


def _dq_is_nonneg(node: ir.Node) -> bool:
    codes, scale = node.inputs[0], node.inputs[1]
    zero_point = node.inputs[2] if len(node.inputs) > 2 else None
    unsigned = codes is not None and codes.dtype in _UNSIGNED_TYPES
    zp_zero = zero_point is None or _all_const(zero_point, lambda a: a == 0)
    return unsigned and zp_zero and _all_const(scale, lambda a: a > 0)


def is_nonneg(value: ir.Value | None, _depth: int = 0) -> bool:
    """Whether the value is provably non-negative from the ops that produce it.

    Graph inputs and anything not recognized count as possibly negative.
    """
    node = None if value is None else value.producer()
    if node is None or node.domain != "" or _depth > _MAX_DEPTH:
        return False
    op = node.op_type
    if op in _NONNEG_OPS:
        return True
    if (
        op == "Clip"
        and len(node.inputs) > 1
        and _all_const(node.inputs[1], lambda a: a >= 0)
    ):
        return True
    if op == "DequantizeLinear":
        return _dq_is_nonneg(node)
    if op == "Concat":
        return all(is_nonneg(v, _depth + 1) for v in node.inputs)
    if op in _SIGN_PRESERVING_OPS:
        return is_nonneg(node.inputs[0], _depth + 1)
    return False


def is_embedding(node: ir.Node) -> bool:
    """Whether ``node`` is a Gather reading rows of a constant float32 2-D table."""
    if node.op_type != "Gather" or node.domain != "":
        return False
    table = const_array(node.inputs[0])
    return table is not None and table.dtype == np.float32 and table.ndim == 2


def weight_input(node: ir.Node) -> int:
    """The index of the node's constant weight: a Gather's table is input 0, else input 1."""
    return 0 if node.op_type == "Gather" else 1


def weight_channel_axis(node: ir.Node) -> int:
    """The output-channel axis of the node's weight (a Gather table's: its rows, one scale
    per token)."""
    if node.op_type == "Gather":
        return 0
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return 1  # MatMul: weight is [K, N]


def _gemm_reason(node: ir.Node) -> str | None:
    if node.attributes.get_int("transA", 0):
        return "Gemm with transA=1 is not quantized"
    if node.attributes.get_float("alpha", 1.0) != 1.0:
        return "Gemm with alpha != 1 is not quantized"
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    if has_bias and node.attributes.get_float("beta", 1.0) != 1.0:
        return "Gemm with beta != 1 is not quantized"
    return None


def _bias_reason(node: ir.Node, out_channels: int) -> str | None:
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is None:
        return None
    array = const_array(bias)
    if array is None:
        return "bias input is not a constant"
    if array.size != out_channels or array.shape[-1:] != (out_channels,):
        return f"bias of shape {list(array.shape)} is not one value per output channel"
    return None


def _gather_reason(node: ir.Node) -> str | None:
    if not is_embedding(node):
        return "Gather is quantized only on a constant float32 2-D table (an embedding)"
    if node.attributes.get_int("axis", 0) != 0:
        return "Gather with axis != 0 is not quantized (rows of the table are looked up)"
    return None


def unsupported_reason(node: ir.Node, dynamic: bool = False) -> str | None:
    """Why the pass cannot quantize ``node`` (with dynamic activations when asked), or None."""
    if node.domain != "" or node.op_type not in SUPPORTED_OPS:
        return f"op type {node.op_type!r} is not quantized (supported: {', '.join(SUPPORTED_OPS)})"
    if node.op_type == "Gather":
        return _gather_reason(node)
    if dynamic and node.op_type not in DYNAMIC_OPS:
        return f"dynamic activations apply to {', '.join(DYNAMIC_OPS)} only, not {node.op_type}"
    reason = _gemm_reason(node) if node.op_type == "Gemm" else None
    if reason:
        return reason
    data = node.inputs[0]
    if data is not None and data.dtype not in (None, ir.DataType.FLOAT):
        return f"input {data.name!r} is {data.dtype}, not float32"
    weight = const_array(node.inputs[1])
    if weight is None:
        return "weight input is not a constant initializer"
    if weight.dtype != np.float32:
        return f"weight is {weight.dtype}, not float32"
    if node.op_type != "Conv" and weight.ndim != 2:
        return f"{node.op_type} weight must be 2-D, got shape {list(weight.shape)}"
    return _bias_reason(node, weight.shape[weight_channel_axis(node)])
