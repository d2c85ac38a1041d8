"""Rewrites for nodes whose activations are not fixed-point Q/DQ: dynamic and weight-only.

Dynamic (Gemm/MatMul) is what onnxruntime's ``quantize_dynamic`` emits, which its optimizer
fuses into ``DynamicQuantizeMatMul``::

    x -> DynamicQuantizeLinear -> (x_q, x_scale, x_zp)
    MatMulInteger(x_q, W_q, x_zp, W_zp) -> Cast(float) -> Mul(x_scale * W_scale) (-> Add bias)

The activation scale comes from the tensor's own range at run time; the weight keeps its
fixed-point scale ``2**-f`` (per tensor or per output column). The float bias is added after.

Weight-only (an embedding Gather) looks rows up in the integer table and dequantizes what it
read: ``Gather(T_q, ids) -> DequantizeLinear`` per tensor; per channel, each row (token) has
its own scale, looked up with it: ``Cast(Gather(T_q, ids)) * Gather(scales, ids)`` (a
DequantizeLinear cannot take per-row scales after the lookup). Packed INT4/INT2 tables are
cast to 8 bits at load, like packed weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxopt.graph import Namer
from onnxopt.optimizer.quantization.qdq_nodes import (
    StoredCodes,
    add_initializer,
    dequantize,
    scale_initializer,
    store_codes,
)
from onnxopt.optimizer.quantization.spec import Container


@dataclass(frozen=True)
class WeightCodes:
    """A constant quantized for an integer node.

    Attributes:
        ints: The integer values, in the layout the integer node reads.
        fracs: One fraction, or one per channel.
        container: The storage type.
        signed: Whether the values are signed.
    """

    ints: np.ndarray
    fracs: int | np.ndarray
    container: Container
    signed: bool

    @property
    def per_channel(self) -> bool:
        return bool(np.ndim(self.fracs))


@dataclass(frozen=True)
class DynamicInput:
    """The three outputs of one ``DynamicQuantizeLinear`` (shared by all its readers)."""

    codes: ir.Value
    scale: ir.Value
    zero_point: ir.Value


def dynamic_input(names: Namer, value: ir.Value, prefix: str) -> tuple[ir.Node, DynamicInput]:
    """A ``DynamicQuantizeLinear`` of ``value`` (uint8, asymmetric, range of each run)."""
    node = ir.node("DynamicQuantizeLinear", [value], num_outputs=3, name=names(f"{prefix}_DynQ"))
    kinds = (("q", ir.DataType.UINT8), ("scale", ir.DataType.FLOAT), ("zp", ir.DataType.UINT8))
    for out, (kind, dtype) in zip(node.outputs, kinds, strict=True):
        out.name, out.dtype = names(f"{prefix}_{kind}"), dtype
    codes, scale, zero_point = node.outputs
    return node, DynamicInput(codes, scale, zero_point)


def _float_node(op: str, inputs: list, names: Namer, prefix: str) -> tuple[ir.Node, ir.Value]:
    node = ir.node(op, inputs, name=names(f"{prefix}_{op}"))
    out = node.outputs[0]
    out.name, out.dtype = names(f"{prefix}_{op.lower()}"), ir.DataType.FLOAT
    return node, out


def dynamic_matmul(
    graph: ir.Graph, names: Namer, x: DynamicInput, weight: WeightCodes, bias: ir.Value | None,
    name: str,
) -> tuple[list[ir.Node], ir.Value, StoredCodes]:  # fmt: skip
    """``MatMulInteger -> Cast -> Mul(scales) (-> Add bias)`` for a ``[K, N]`` weight.

    The MatMulInteger is named ``name`` (the node it replaces: onnxruntime keeps the name
    when it fuses the chain into ``DynamicQuantizeMatMul``).

    Returns:
        The nodes (not inserted), the float output, and the stored weight codes.
    """
    stored = store_codes(graph, names, weight.ints, weight.container, f"{name}_weight",
                         signed=weight.signed)  # fmt: skip
    w_scale = scale_initializer(graph, names, weight.fracs, f"{name}_weight")
    zero_points = stored.zero_points(np.shape(weight.fracs))
    w_zp = add_initializer(graph, names, f"{name}_weight_zero_point", zero_points)
    matmul = ir.node("MatMulInteger", [x.codes, stored.codes, x.zero_point, w_zp], name=name)
    matmul.outputs[0].name = names(f"{name}_int32")
    matmul.outputs[0].dtype = ir.DataType.INT32
    cast = ir.node("Cast", [matmul.outputs[0]], attributes={"to": ir.DataType.FLOAT},
                   name=names(f"{name}_Cast"))  # fmt: skip
    cast.outputs[0].name, cast.outputs[0].dtype = names(f"{name}_acc"), ir.DataType.FLOAT
    scales, scale = _float_node("Mul", [x.scale, w_scale], names, f"{name}_scales")
    rescale, out = _float_node("Mul", [cast.outputs[0], scale], names, f"{name}_rescale")
    nodes = [*stored.nodes, matmul, cast, scales, rescale]
    if bias is not None:
        add, out = _float_node("Add", [out, bias], names, f"{name}_bias")
        nodes.append(add)
    return nodes, out, stored


def quantized_gather(
    graph: ir.Graph, names: Namer, table: WeightCodes, ids: ir.Value, name: str
) -> tuple[list[ir.Node], ir.Value, StoredCodes]:
    """``Gather(T_q, ids) -> DequantizeLinear`` for a ``[V, D]`` table, or with one scale
    per row ``Cast(Gather(T_q, ids)) * Gather(scales, ids)``. The Gather keeps ``name``.

    Returns:
        The nodes (not inserted), the float output, and the stored table codes.
    """
    stored = store_codes(graph, names, table.ints, table.container, f"{name}_table",
                         signed=table.signed)  # fmt: skip
    gather = ir.node("Gather", [stored.codes, ids], attributes={"axis": 0}, name=name)
    looked_up = gather.outputs[0]
    looked_up.name = names(f"{name}_codes")
    looked_up.dtype = ir.DataType.from_numpy(stored.container.numpy_dtype)
    if not table.per_channel:
        dq, out = dequantize(graph, names, stored, looked_up, table.fracs, None, f"{name}_table")
        return [*stored.nodes, gather, dq], out, stored
    assert stored.zero_point == 0  # tables are stored signed (a lookup has no u8s8 kernel)
    rows = np.ldexp(np.float32(1.0), -np.asarray(table.fracs, np.int32)).astype(np.float32)
    scales = add_initializer(graph, names, f"{name}_row_scale", rows.reshape(-1, 1))
    scale_of = ir.node("Gather", [scales, ids], attributes={"axis": 0},
                       name=names(f"{name}_row_scale_Gather"))  # fmt: skip
    scale_of.outputs[0].name = names(f"{name}_row_scales")
    scale_of.outputs[0].dtype = ir.DataType.FLOAT
    cast = ir.node("Cast", [looked_up], attributes={"to": ir.DataType.FLOAT},
                   name=names(f"{name}_Cast"))  # fmt: skip
    cast.outputs[0].name, cast.outputs[0].dtype = names(f"{name}_codes_float"), ir.DataType.FLOAT
    mul, out = _float_node("Mul", [cast.outputs[0], scale_of.outputs[0]], names, f"{name}_rows")
    return [*stored.nodes, gather, scale_of, cast, mul], out, stored
