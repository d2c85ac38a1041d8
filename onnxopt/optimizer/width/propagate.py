"""How channels flow through each op: the handlers the channel analysis walks the graph with.

A handler returns None when it followed the channels through its node, or the reason it
could not; then every tracked input of the node is frozen with that reason and its outputs
start frozen spaces of their own. Unknown ops are never guessed at: they freeze. The weight
nodes' handlers (Gemm, MatMul, Conv) are in :mod:`.weight_ops`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

import numpy as np
import onnx_ir as ir

from onnxopt.graph import attr_value, const_array, rank_of
from onnxopt.optimizer.width.builder import Builder
from onnxopt.optimizer.width.groups import Edit, EditKind
from onnxopt.optimizer.width.weight_ops import conv, gemm, matmul

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


def _elementwise(b: Builder, node: ir.Node, i: int) -> str | None:
    out_rank = rank_of(node.outputs[0])
    hits = [(k, hit, v) for k, v in enumerate(node.inputs) if (hit := b.lookup(v)) is not None]
    if out_rank is None or not hits:
        return "has an output of unknown rank" if hits else None
    from_end: set[int] = set()  # each tracked input's channel axis, counted from the end
    for _, (_, axis), v in hits:
        rank = rank_of(v)
        if axis is None:
            continue
        if rank is None:
            return "has an input of unknown rank"
        from_end.add(rank - axis)
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
    axes = const_array(axes_value) if axes_value is not None else attr_value(node, "axes", None)
    if axes_value is not None and axes is None:
        return "reduces over computed axes"
    if axes is None or len(axes) == 0:
        if int(attr_value(node, "noop_with_empty_axes", 0)):
            b.assign(node.outputs[0], hit[0], hit[1])
            return None
        return "reduces over every axis, channels included"
    axes = sorted(int(a) % rank for a in np.ravel(axes))
    sid, axis = hit
    if axis is not None and axis in axes:
        return "reduces over the channel axis"
    if axis is not None and not int(attr_value(node, "keepdims", 1)):
        axis -= sum(a < axis for a in axes)
    b.assign(node.outputs[0], sid, axis)
    return None


def _unit_axis(shape: ir.Shape | None, width: int | None) -> int | None:
    """The channel axis of a shape whose non-batch dims are all 1 except one of size width."""
    if shape is None or width is None or width <= 1:
        return None
    dims = [d for d in list(shape)[1:] if isinstance(d, int)]
    if len(dims) != len(shape) - 1 or sorted(dims)[-1:] != [width]:
        return None
    if sum(d == width for d in dims) != 1 or any(d not in (1, width) for d in dims):
        return None
    return dims.index(width) + 1


def _unit_reshape(b: Builder, node: ir.Node, i: int) -> str | None:
    x = node.inputs[0]
    hit = b.lookup(x)
    if x is None or hit is None:
        return "reshapes an untracked tensor"
    sid, axis = hit
    y, width = node.outputs[0], b.space(sid).width
    a_in, a_out = _unit_axis(x.shape, width), _unit_axis(y.shape, width)
    if a_in is None or a_out is None or axis not in (None, a_in):
        return f"mixes channels with space ({_fmt(x.shape)} -> {_fmt(y.shape)})"
    if node.op_type == "Reshape":
        target = const_array(node.inputs[1])
        if target is None:
            return "has a computed target shape"
        entry = int(target[a_out])
        keeps = entry == -1 or (
            entry == 0 and not attr_value(node, "allowzero", 0) and a_in == a_out
        )
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
    perm = list(attr_value(node, "perm", list(range(rank))[::-1]))
    b.assign(node.outputs[0], hit[0], None if hit[1] is None else perm.index(hit[1]))
    return None


def _qdq(b: Builder, node: ir.Node, i: int) -> str | None:
    hit, rank = b.lookup(node.inputs[0]), rank_of(node.inputs[0])
    scale = const_array(node.inputs[1])
    if hit is None or scale is None:
        return "has an untracked input or a scale that is not a constant"
    if int(attr_value(node, "block_size", 0)):
        return "uses blocked quantization"
    sid, axis = hit
    if scale.size > 1:
        q_axis = int(attr_value(node, "axis", 1)) % (rank or 1)
        if axis is not None and (q_axis != axis or scale.ndim != 1):
            return "is quantized per channel on another axis"
        for k in range(1, len(node.inputs)):
            if node.inputs[k] is not None:
                b.add_edit(sid, Edit(EditKind.SLICE, i, k, 0))
    b.assign(node.outputs[0], sid, axis)
    return None


def _softmax(b: Builder, node: ir.Node, i: int) -> str | None:
    """Softmax, LogSoftmax, Hardmax: channels pass unless they are normalized together.

    From opset 13 ``axis`` (default -1) is the one axis normalized. Before, the input is
    flattened to 2-D at ``axis`` (default 1) and the whole second factor (axes ``axis``..
    last) is normalized as one, so every channel axis from ``axis`` on is mixed.
    """
    hit, rank = b.lookup(node.inputs[0]), rank_of(node.inputs[0])
    if hit is None or rank is None:
        return "normalizes a tensor of unknown layout"
    sid, channels = hit
    if channels is None:
        return "normalizes across channels"
    if b.opset < 13:
        axis = int(attr_value(node, "axis", 1)) % rank
        if channels >= axis:
            return (
                f"at opset {b.opset} normalizes axes {axis}..{rank - 1} as one (before opset "
                f"13, axis={axis} flattens the input to 2-D there), which mixes the channels "
                f"on axis {channels}"
            )
    elif int(attr_value(node, "axis", -1)) % rank == channels:
        return f"normalizes across the channels (axis {channels})"
    b.assign(node.outputs[0], sid, channels)
    return None


def _concat(b: Builder, node: ir.Node, i: int) -> str | None:
    """Concat joins tensors into one axis: channel groups never flow through it."""
    hits = [b.lookup(v) for v in node.inputs if b.tracked(v)]
    rank, n = rank_of(node.outputs[0]), len(node.inputs)
    axis = int(attr_value(node, "axis", 1)) % rank if rank else None
    if axis is None or any(hit is not None and hit[1] in (None, axis) for hit in hits):
        where = "" if axis is None else f" (axis {axis})"
        return (
            f"joins the channels of {n} tensors into one axis{where}; the analysis does not "
            "split a joined axis back into its groups, so it freezes them"
        )
    return (
        f"joins {n} tensors along axis {axis}, which the analysis does not follow, so it "
        "freezes their channels"
    )


def _constant(b: Builder, node: ir.Node, i: int) -> str | None:
    return None


HANDLERS: MappingProxyType[str, Handler] = MappingProxyType(
    {
        "Gemm": gemm,
        "MatMul": matmul,
        "Conv": conv,
        "Constant": _constant,
        "BatchNormalization": _norm,
        "InstanceNormalization": _norm,
        "Transpose": _transpose,
        "QuantizeLinear": _qdq,
        "DequantizeLinear": _qdq,
        "Softmax": _softmax,
        "LogSoftmax": _softmax,
        "Hardmax": _softmax,
        "Concat": _concat,
        **{op: _elementwise for op in ELEMENTWISE_OPS},
        **{op: _pool for op in POOL_OPS},
        **{op: _reduce for op in REDUCE_OPS},
        **{op: _unit_reshape for op in UNIT_RESHAPE_OPS},
    }
)
"""The one registry of channel-flow rules, by ONNX op type (default domain)."""
