"""How channels flow through each op: the handlers the channel analysis walks the graph with.

A handler returns None when it followed the channels through its node, or the reason it
could not; then every tracked input of the node is frozen with that reason and its outputs
start frozen spaces of their own. Unknown ops are never guessed at: they freeze.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import numpy as np
import onnx_ir as ir

from onnxopt.optimizer.width.builder import Builder, const_array, rank_of
from onnxopt.optimizer.width.groups import Edit, EditKind, WeightNode

Handler = Callable[[Builder, ir.Node, int], "str | None"]

ELEMENTWISE_OPS = frozenset(
    "Relu LeakyRelu PRelu Sigmoid Tanh HardSigmoid HardSwish Gelu Elu Selu Celu Softplus "
    "Softsign Mish ThresholdedRelu Identity Dropout Abs Neg Exp Log Sqrt Reciprocal Erf "
    "Floor Ceil Round Sign Cast Clip Add Sub Mul Div Pow Max Min Mean Sum".split()
)
"""Elementwise ops: channels pass through; constants per channel are sliced with them."""

POOL_OPS = frozenset(
    "MaxPool AveragePool LpPool GlobalAveragePool GlobalMaxPool GlobalLpPool".split()
)
REDUCE_OPS = frozenset(
    "ReduceMean ReduceMax ReduceMin ReduceSum ReduceProd ReduceL1 ReduceL2 ReduceLogSum "
    "ReduceLogSumExp ReduceSumSquare".split()
)
UNIT_RESHAPE_OPS = frozenset("Reshape Flatten Squeeze Unsqueeze".split())


def _attr(node: ir.Node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _weights_reason(value: ir.Value | None) -> str:
    producer = value.producer() if value is not None else None
    if producer is not None and producer.op_type == "DequantizeLinear":
        return "has quantized weights (DequantizeLinear); scale before quantizing"
    return "has weights that are not a constant (of the expected rank)"


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


def _gemm(b: Builder, node: ir.Node, i: int) -> str | None:
    w = const_array(node.inputs[1])
    if w is None or w.ndim != 2:
        return _weights_reason(node.inputs[1])
    trans_b = int(_attr(node, "transB", 0))
    out_axis = 0 if trans_b else 1
    n_out = int(w.shape[out_axis])
    c, reason = _bias(node, 2, n_out)
    if reason:
        return reason
    hit = b.lookup(node.inputs[0])
    if hit is not None and int(_attr(node, "transA", 0)):
        b.freeze(hit[0], f"Gemm node {b.names[i]!r} reads it with transA=1")
    _consume(b, node, i, 1, Edit(EditKind.SPLIT, i, 1, 1 - out_axis))
    edits = [Edit(EditKind.SLICE, i, 1, out_axis)]
    if c is not None:
        edits.append(Edit(EditKind.SLICE, i, 2, c.ndim - 1))
    b.assign(node.outputs[0], b.produce(i, n_out, edits), 1)
    attrs = {"alpha": float(_attr(node, "alpha", 1.0)), "beta": float(_attr(node, "beta", 1.0))}
    _record(b, node, i, out_axis, (i, 2) if c is not None else None, attrs)
    return None


def _matmul(b: Builder, node: ir.Node, i: int) -> str | None:
    w = const_array(node.inputs[1])
    rank = rank_of(node.inputs[0])
    if w is None or w.ndim != 2:
        return _weights_reason(node.inputs[1])
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


def _conv(b: Builder, node: ir.Node, i: int) -> str | None:
    w = const_array(node.inputs[1])
    if w is None or w.ndim < 3:
        return _weights_reason(node.inputs[1])
    group = int(_attr(node, "group", 1))
    c_out, c_in = int(w.shape[0]), int(w.shape[1]) * group
    c, reason = _bias(node, 2, c_out)
    if reason:
        return reason
    if group != 1:
        if group == c_in == c_out:
            return _depthwise(b, node, i, c is not None)
        return f"is a grouped Conv (group={group}) that ties channels in blocks"
    _consume(b, node, i, 1, Edit(EditKind.SPLIT, i, 1, 1))
    edits = [Edit(EditKind.SLICE, i, 1, 0)] + (
        [Edit(EditKind.SLICE, i, 2, 0)] if c is not None else []
    )
    b.assign(node.outputs[0], b.produce(i, c_out, edits), 1)
    attrs = {
        "kernel_shape": tuple(int(k) for k in w.shape[2:]),
        "pads": tuple(_attr(node, "pads", (0,) * 2 * (w.ndim - 2))),
        "strides": tuple(_attr(node, "strides", (1,) * (w.ndim - 2))),
        "dilations": tuple(_attr(node, "dilations", (1,) * (w.ndim - 2))),
        "auto_pad": str(_attr(node, "auto_pad", "NOTSET")),
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
    return None


def _record(b: Builder, node: ir.Node, i: int, out_axis: int, bias, attrs: dict) -> None:
    in_axis = {"Gemm": 1 - out_axis, "MatMul": 0, "Conv": 1}[node.op_type]
    b.weights[i] = WeightNode(
        index=i,
        name=b.names[i],
        op_type=node.op_type,
        input_name=node.inputs[0].name,
        output_name=node.outputs[0].name,
        out_axis=out_axis,
        in_axis=in_axis,
        bias=bias,
        attrs=MappingProxyType(attrs),
    )


def _elementwise(b: Builder, node: ir.Node, i: int) -> str | None:
    out_rank = rank_of(node.outputs[0])
    hits = [(k, b.lookup(v), v) for k, v in enumerate(node.inputs) if b.tracked(v)]
    if out_rank is None or not hits:
        return "has an output of unknown rank" if hits else None
    from_end = {rank_of(v) - axis for _, (_, axis), v in hits if axis is not None}
    if len(from_end) > 1:
        return "broadcasts channels against another axis"
    sid = hits[0][1][0]
    for _, (other, _), _ in hits[1:]:
        sid = b.union(sid, other, f"joined by {node.op_type} node {b.names[i]!r}")
    axis = out_rank - from_end.pop() if from_end else None
    if node.op_type == "Clip" and any(const_array(v) is None for v in node.inputs[1:] if v):
        return "clips to bounds that are not constants"
    width = b.space(sid).width
    for k, value in enumerate(node.inputs):
        c = const_array(value) if not b.tracked(value) else None
        if c is None or axis is None:
            continue
        c_axis = c.ndim - (out_rank - axis)
        if c_axis >= 0 and c.shape[c_axis] != 1:
            if c.shape[c_axis] != width:
                return f"applies a constant of shape {list(c.shape)} that does not fit the channels"
            b.add_edit(sid, Edit(EditKind.SLICE, i, k, c_axis))
    b.assign(node.outputs[0], sid, axis)
    return None


def _norm(b: Builder, node: ir.Node, i: int) -> str | None:
    hit = b.lookup(node.inputs[0])
    if hit is None:
        return "normalizes an untracked tensor"
    if any(o is not None and o.name for o in node.outputs[1:]):
        return "runs in training mode (it has statistics outputs)"
    sid, axis = hit
    if axis not in (None, 1):
        return f"normalizes axis 1, but the channels are on axis {axis}"
    for k, value in enumerate(node.inputs[1:], start=1):
        c = const_array(value)
        if c is None or c.ndim != 1:
            return "has parameters that are not constant vectors"
        b.add_edit(sid, Edit(EditKind.SLICE, i, k, 0))
    b.assign(node.outputs[0], sid, 1)
    return None


def _pool(b: Builder, node: ir.Node, i: int) -> str | None:
    hit = b.lookup(node.inputs[0])
    if hit is None or hit[1] not in (None, 1):
        return "pools a tensor whose channels are not on axis 1"
    b.assign(node.outputs[0], hit[0], 1)
    return None


def _reduce(b: Builder, node: ir.Node, i: int) -> str | None:
    hit, rank = b.lookup(node.inputs[0]), rank_of(node.inputs[0])
    if hit is None or rank is None:
        return "reduces a tensor of unknown layout"
    axes_value = node.inputs[1] if len(node.inputs) > 1 else None
    axes = const_array(axes_value) if axes_value is not None else _attr(node, "axes", None)
    if axes_value is not None and axes is None:
        return "reduces over computed axes"
    if axes is None or len(axes) == 0:
        if int(_attr(node, "noop_with_empty_axes", 0)):
            b.assign(node.outputs[0], hit[0], hit[1])
            return None
        return "reduces over every axis, channels included"
    axes = sorted(int(a) % rank for a in np.ravel(axes))
    sid, axis = hit
    if axis is not None and axis in axes:
        return "reduces over the channel axis"
    if axis is not None and not int(_attr(node, "keepdims", 1)):
        axis -= sum(a < axis for a in axes)
    b.assign(node.outputs[0], sid, axis)
    return None


def _unit_axis(shape: ir.Shape | None, width: int | None) -> int | None:
    """The channel axis of a shape whose non-batch dims are all 1 except one of size width."""
    if shape is None or width is None or width <= 1:
        return None
    dims = list(shape)[1:]
    if not all(isinstance(d, int) for d in dims) or sorted(dims)[-1:] != [width]:
        return None
    if sum(d == width for d in dims) != 1 or any(d not in (1, width) for d in dims):
        return None
    return dims.index(width) + 1


def _unit_reshape(b: Builder, node: ir.Node, i: int) -> str | None:
    hit = b.lookup(node.inputs[0])
    if hit is None:
        return "reshapes an untracked tensor"
    sid, axis = hit
    x, y, width = node.inputs[0], node.outputs[0], b.space(sid).width
    a_in, a_out = _unit_axis(x.shape, width), _unit_axis(y.shape, width)
    if a_in is None or a_out is None or axis not in (None, a_in):
        return f"mixes channels with space ({_fmt(x.shape)} -> {_fmt(y.shape)})"
    if node.op_type == "Reshape":
        target = const_array(node.inputs[1])
        if target is None:
            return "has a computed target shape"
        entry = int(target[a_out])
        keeps = entry == -1 or (entry == 0 and not _attr(node, "allowzero", 0) and a_in == a_out)
        if entry == width:
            b.add_edit(sid, Edit(EditKind.SHAPE_ENTRY, i, 1, a_out))
        elif not keeps:
            return f"has a target shape {target.tolist()} that cannot follow a new width"
    b.assign(y, sid, a_out)
    return None


def _fmt(shape: ir.Shape | None) -> str:
    return "?" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


def _transpose(b: Builder, node: ir.Node, i: int) -> str | None:
    hit, rank = b.lookup(node.inputs[0]), rank_of(node.inputs[0])
    if hit is None or rank is None:
        return "transposes a tensor of unknown layout"
    perm = list(_attr(node, "perm", list(range(rank))[::-1]))
    b.assign(node.outputs[0], hit[0], None if hit[1] is None else perm.index(hit[1]))
    return None


def _qdq(b: Builder, node: ir.Node, i: int) -> str | None:
    hit, rank = b.lookup(node.inputs[0]), rank_of(node.inputs[0])
    scale = const_array(node.inputs[1])
    if hit is None or scale is None:
        return "has an untracked input or a scale that is not a constant"
    if int(_attr(node, "block_size", 0)):
        return "uses blocked quantization"
    sid, axis = hit
    if scale.size > 1:
        q_axis = int(_attr(node, "axis", 1)) % (rank or 1)
        if axis is not None and (q_axis != axis or scale.ndim != 1):
            return "is quantized per channel on another axis"
        for k in range(1, len(node.inputs)):
            if node.inputs[k] is not None:
                b.add_edit(sid, Edit(EditKind.SLICE, i, k, 0))
    b.assign(node.outputs[0], sid, axis)
    return None


def _softmax(b: Builder, node: ir.Node, i: int) -> str | None:
    hit, rank = b.lookup(node.inputs[0]), rank_of(node.inputs[0])
    if hit is None or rank is None:
        return "normalizes a tensor of unknown layout"
    if hit[1] is None or int(_attr(node, "axis", -1)) % rank == hit[1]:
        return "normalizes across channels"
    b.assign(node.outputs[0], hit[0], hit[1])
    return None


def _constant(b: Builder, node: ir.Node, i: int) -> str | None:
    return None


HANDLERS: MappingProxyType[str, Handler] = MappingProxyType(
    {
        "Gemm": _gemm,
        "MatMul": _matmul,
        "Conv": _conv,
        "Constant": _constant,
        "BatchNormalization": _norm,
        "InstanceNormalization": _norm,
        "Transpose": _transpose,
        "QuantizeLinear": _qdq,
        "DequantizeLinear": _qdq,
        "Softmax": _softmax,
        "LogSoftmax": _softmax,
        "Hardmax": _softmax,
        **{op: _elementwise for op in ELEMENTWISE_OPS},
        **{op: _pool for op in POOL_OPS},
        **{op: _reduce for op in REDUCE_OPS},
        **{op: _unit_reshape for op in UNIT_RESHAPE_OPS},
    }
)
"""The one registry of channel-flow rules, by ONNX op type (default domain)."""
