"""How channels enter and leave the weight nodes: Gemm, MatMul and Conv with constant weights.

Each handler consumes its input channels (the consumer's weights are split among copies when
the group widens) and produces a new space of output channels, or returns why it cannot:
weights that are not a constant (with the node that produces them), quantized weights, a
grouped Conv. A depthwise Conv has no width of its own: it joins the group it reads.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np
import onnx_ir as ir

from onnxopt.graph import attr_value, const_array, rank_of, value_name
from onnxopt.optimizer.width.builder import Builder
from onnxopt.optimizer.width.groups import Edit, EditKind, WeightNode

FOLD_HINT = "fold constants first (`onnxopt export MODEL.onnx -o folded.onnx` does)"


def _weights_reason(b: Builder, value: ir.Value | None, ranks: str) -> str:
    """Why a weight input is not usable, as precisely as the graph tells."""
    if value is None:
        return "has no weight input"
    producer = value.producer()
    if producer is not None and producer.op_type == "DequantizeLinear":
        return "has quantized weights (DequantizeLinear); scale before quantizing"
    if value.is_graph_input():
        return f"reads its weights from graph input {value.name!r}, not a constant"
    if producer is not None and producer.op_type != "Constant":
        p = b.names[b.index[id(producer)]] if id(producer) in b.index else producer.name
        return (
            f"reads its weights {value.name!r} from {producer.op_type} node {p!r}, not from "
            f"a constant; {FOLD_HINT}"
        )
    w = const_array(value)
    if w is None:
        return f"reads weights {value.name!r} that are not a constant"
    return f"has weights {value.name!r} of rank {w.ndim}, not {ranks}"


def _consume(b: Builder, node: ir.Node, i: int, expected_axis: int, edit: Edit) -> None:
    hit = b.lookup(node.inputs[0])
    if hit is None:
        return
    sid, axis = hit
    if axis is not None and axis != expected_axis:
        b.freeze(
            sid,
            f"{node.op_type} node {b.names[i]!r} reads channels on axis "
            f"{expected_axis}, not on axis {axis}",
        )
    b.consume(sid, i, edit)


def _bias(node: ir.Node, index: int, n_out: int) -> tuple[np.ndarray | None, str | None]:
    value = node.inputs[index] if len(node.inputs) > index else None
    if value is None:
        return None, None
    c = const_array(value)
    if c is None:
        return None, "adds a bias that is not a constant"
    if c.ndim >= 1 and c.shape[-1] == n_out and c.size == n_out:
        return c, None
    if c.size == 1:
        return None, None
    return None, f"adds a bias of shape {list(c.shape)} that is not per channel"


def gemm(b: Builder, node: ir.Node, i: int) -> str | None:
    """Gemm with constant 2-D weights: consumes its input group, produces its output group."""
    w = const_array(node.inputs[1])
    if w is None or w.ndim != 2:
        return _weights_reason(b, node.inputs[1], "2")
    trans_b = int(attr_value(node, "transB", 0))
    out_axis = 0 if trans_b else 1
    n_out = int(w.shape[out_axis])
    c, reason = _bias(node, 2, n_out)
    if reason:
        return reason
    hit = b.lookup(node.inputs[0])
    if hit is not None and int(attr_value(node, "transA", 0)):
        b.freeze(hit[0], f"Gemm node {b.names[i]!r} reads it with transA=1")
    _consume(b, node, i, 1, Edit(EditKind.SPLIT, i, 1, 1 - out_axis))
    edits = [Edit(EditKind.SLICE, i, 1, out_axis)]
    if c is not None:
        edits.append(Edit(EditKind.SLICE, i, 2, c.ndim - 1))
    b.assign(node.outputs[0], b.produce(i, n_out, edits), 1)
    attrs = {
        "alpha": float(attr_value(node, "alpha", 1.0)),
        "beta": float(attr_value(node, "beta", 1.0)),
    }
    _record(b, node, i, out_axis, (i, 2) if c is not None else None, attrs)
    return None


def matmul(b: Builder, node: ir.Node, i: int) -> str | None:
    """MatMul with constant 2-D weights on the last axis (a following bias Add is its bias)."""
    w = const_array(node.inputs[1])
    rank = rank_of(node.inputs[0])
    if w is None or w.ndim != 2:
        return _weights_reason(b, node.inputs[1], "2")
    if rank is None or rank < 2:
        return "has a data input of unknown rank or rank 1"
    n_out = int(w.shape[1])
    _consume(b, node, i, rank - 1, Edit(EditKind.SPLIT, i, 1, 0))
    b.assign(node.outputs[0], b.produce(i, n_out, [Edit(EditKind.SLICE, i, 1, 1)]), rank - 1)
    _record(b, node, i, 1, _matmul_bias(b, node, n_out), {})
    return None


def _matmul_bias(b: Builder, node: ir.Node, n_out: int) -> tuple[int, int] | None:
    out = node.outputs[0]
    uses = list(out.uses())
    if len(uses) != 1 or out.is_graph_output():
        return None
    user, index = uses[0].node, uses[0].idx
    if user.op_type != "Add" or user.domain not in ("", "ai.onnx") or id(user) not in b.index:
        return None
    c = const_array(user.inputs[1 - index])
    if c is None or c.ndim < 1 or c.shape[-1] != n_out or c.size != n_out:
        return None
    return b.index[id(user)], 1 - index


def conv(b: Builder, node: ir.Node, i: int) -> str | None:
    """Conv with constant weights; a depthwise Conv is a member of the group it reads."""
    w = const_array(node.inputs[1])
    if w is None or w.ndim < 3:
        return _weights_reason(b, node.inputs[1], "3 or more")
    group = int(attr_value(node, "group", 1))
    c_out, c_in = int(w.shape[0]), int(w.shape[1]) * group
    c, reason = _bias(node, 2, c_out)
    if reason:
        return reason
    if group != 1:
        if group == c_in == c_out:
            return _depthwise(b, node, i, c is not None)
        return (
            f"is a grouped Conv (group={group}): each block of {c_out // group} output channels "
            f"reads its own block of {c_in // group} input channels, so neither side can change "
            "width alone"
        )
    _consume(b, node, i, 1, Edit(EditKind.SPLIT, i, 1, 1))
    edits = [Edit(EditKind.SLICE, i, 1, 0)] + (
        [Edit(EditKind.SLICE, i, 2, 0)] if c is not None else []
    )
    b.assign(node.outputs[0], b.produce(i, c_out, edits), 1)
    attrs = {
        "kernel_shape": tuple(int(k) for k in w.shape[2:]),
        "pads": tuple(attr_value(node, "pads", (0,) * 2 * (w.ndim - 2))),
        "strides": tuple(attr_value(node, "strides", (1,) * (w.ndim - 2))),
        "dilations": tuple(attr_value(node, "dilations", (1,) * (w.ndim - 2))),
        "auto_pad": str(attr_value(node, "auto_pad", "NOTSET")),
    }
    _record(b, node, i, 0, (i, 2) if c is not None else None, attrs)
    return None


def _depthwise(b: Builder, node: ir.Node, i: int, has_bias: bool) -> str | None:
    hit = b.lookup(node.inputs[0])
    if hit is None:
        return "is a depthwise Conv on an untracked tensor"
    sid, axis = hit
    if axis not in (None, 1):
        return "is a depthwise Conv reading channels on an axis other than 1"
    b.add_edit(sid, Edit(EditKind.SLICE, i, 1, 0))
    if has_bias:
        b.add_edit(sid, Edit(EditKind.SLICE, i, 2, 0))
    b.add_edit(sid, Edit(EditKind.GROUP_ATTR, i, -1, 0))
    b.assign(node.outputs[0], sid, 1)
    b.refuse(
        i,
        "is a depthwise Conv: each output channel filters its own input channel, so it has "
        "no width of its own",
        sid,
    )
    return None


def _record(b: Builder, node: ir.Node, i: int, out_axis: int, bias, attrs: dict) -> None:
    in_axis = {"Gemm": 1 - out_axis, "MatMul": 0, "Conv": 1}[node.op_type]
    b.weights[i] = WeightNode(
        index=i,
        name=b.names[i],
        op_type=node.op_type,
        input_name=value_name(node.inputs[0]),
        output_name=value_name(node.outputs[0]),
        out_axis=out_axis,
        in_axis=in_axis,
        bias=bias,
        attrs=MappingProxyType(attrs),
    )
