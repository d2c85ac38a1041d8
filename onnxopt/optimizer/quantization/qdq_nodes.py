"""Building blocks that materialize fixed-point specs as onnx_ir Q/DQ nodes and initializers.

Activations become ``QuantizeLinear -> (Clip) -> DequantizeLinear`` with scale ``2**-frac``.
Narrow widths in uint8 containers clip the integer codes (``Q -> Clip -> DQ``), which
onnxruntime 1.32 still fuses into QGemm / QLinearConv / QLinearMatMul. Other containers
clip on the float side (``Clip -> Q -> DQ``, numerically identical): with int8 codes a Clip
stops the MatMul/Conv fusion, and onnxruntime has no int16/uint16 Clip kernel at all.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir

from onnxopt.graph import Namer
from onnxopt.optimizer.quantization.fixed_point import int_range, scale_of
from onnxopt.optimizer.quantization.spec import (
    Container,
    Role,
    Storage,
    TensorSpec,
    resolve_container,
)


@dataclasses.dataclass(frozen=True)
class ActivationQuant:
    """A resolved activation quantizer: everything one Q(->Clip)->DQ chain needs."""

    width: int
    frac: int
    signed: bool
    container: Container

    @classmethod
    def from_spec(cls, spec: TensorSpec, signed: bool) -> ActivationQuant:
        """Resolve ``spec`` for a value of the given signedness (frac must be set)."""
        if not isinstance(spec.frac, int):
            raise ValueError("activation specs need a single integer frac")
        container = resolve_container(spec, Role.ACTIVATION, signed, Storage.CONTAINER)
        return cls(spec.width, spec.frac, signed, container)

    @property
    def zero_point(self) -> int:
        """The container zero point (128 / 32768 for signed values in unsigned types)."""
        return self.container.zero_point(self.signed)

    @property
    def code_bounds(self) -> tuple[int, int]:
        """The container codes of the smallest and largest representable value."""
        lo, hi = int_range(self.width, self.signed)
        return lo + self.zero_point, hi + self.zero_point

    @property
    def needs_clip(self) -> bool:
        """Whether the width is narrower than what the container saturates to."""
        return self.code_bounds != int_range(self.container.bits, self.container.signed)

    @property
    def clips_codes(self) -> bool:
        """Clip the integer codes (uint8) rather than the float input (other containers)."""
        return self.needs_clip and self.container is Container.UINT8


def add_initializer(graph: ir.Graph, names: Namer, base: str, array: np.ndarray) -> ir.Value:
    """Register ``array`` as a new initializer named after ``base``."""
    # ir.Tensor, not ir.tensor: its isinstance checks against runtime Protocols cost ~4 ms
    # per candidate (a few hundred initializers), a sixth of a trial on a small model
    tensor = ir.Tensor(np.asarray(array), name=names(base))
    # No type/shape on the value: the tensor carries them, and ir would write value_info.
    value = ir.Value(name=tensor.name, const_value=tensor)
    graph.register_initializer(value)
    return value


def _scale_array(fracs: int | np.ndarray) -> np.ndarray:
    return np.ldexp(np.float32(1.0), -np.asarray(fracs, dtype=np.int32)).astype(np.float32)


def _typed_output(node: ir.Node, name: str, dtype: ir.DataType, like: ir.Value) -> ir.Value:
    out = node.outputs[0]
    out.name, out.dtype = name, dtype
    if like.const_value is not None:
        out.shape = ir.Shape(like.const_value.shape.numpy())  # a tensor's dims are all static
    elif like.shape is not None:
        out.shape = ir.Shape(like.shape)
    return out


def _float_clip(graph: ir.Graph, names: Namer, value: ir.Value, aq: ActivationQuant, prefix: str):
    lo, hi = int_range(aq.width, aq.signed)
    bounds = [np.array(b * scale_of(aq.frac), np.float32) for b in (lo, hi)]
    inits = [
        add_initializer(graph, names, f"{prefix}_clip_{s}", b)
        for s, b in zip(("lo", "hi"), bounds, strict=True)
    ]
    node = ir.node("Clip", [value, *inits], name=names(f"{prefix}_Clip"))
    return node, _typed_output(node, names(f"{prefix}_clipped"), ir.DataType.FLOAT, value)


def activation_qdq(
    graph: ir.Graph, names: Namer, value: ir.Value, aq: ActivationQuant, prefix: str
) -> tuple[list[ir.Node], ir.Value]:
    """Build ``Q -> (Clip) -> DQ`` (or ``Clip -> Q -> DQ`` for 16-bit) fed by ``value``.

    Args:
        graph: Graph that receives the scale, zero-point and clip initializers.
        names: Name source for the graph.
        value: The float activation to quantize.
        aq: The resolved quantizer.
        prefix: Base for the new names.

    Returns:
        The new nodes in topological order (not yet inserted) and the DQ output.
    """
    dtype = ir.DataType.from_numpy(aq.container.numpy_dtype)
    scale = add_initializer(graph, names, f"{prefix}_scale", _scale_array(aq.frac))
    zp = add_initializer(
        graph, names, f"{prefix}_zero_point", np.array(aq.zero_point, aq.container.numpy_dtype)
    )
    nodes: list[ir.Node] = []
    if aq.needs_clip and not aq.clips_codes:
        clip, value = _float_clip(graph, names, value, aq, prefix)
        nodes.append(clip)
    quant = ir.node("QuantizeLinear", [value, scale, zp], name=names(f"{prefix}_Q"))
    codes = _typed_output(quant, names(f"{prefix}_q"), dtype, value)
    nodes.append(quant)
    if aq.clips_codes:
        bounds = [np.array(b, aq.container.numpy_dtype) for b in aq.code_bounds]
        inits = [
            add_initializer(graph, names, f"{prefix}_clip_{s}", b)
            for s, b in zip(("lo", "hi"), bounds, strict=True)
        ]
        clip = ir.node("Clip", [codes, *inits], name=names(f"{prefix}_Clip"))
        codes = _typed_output(clip, names(f"{prefix}_q_clipped"), dtype, value)
        nodes.append(clip)
    dequant = ir.node("DequantizeLinear", [codes, scale, zp], name=names(f"{prefix}_DQ"))
    nodes.append(dequant)
    return nodes, _typed_output(dequant, names(f"{prefix}_dq"), ir.DataType.FLOAT, value)


def _widen_sub_byte(
    names: Namer, stored: ir.Value, container: Container, prefix: str
) -> tuple[list[ir.Node], ir.Value, Container]:
    """``Cast`` a packed INT4/INT2 initializer to its 8-bit container.

    onnxruntime constant-folds the Cast at load, so the file keeps the packed bytes while
    the DQ sees int8 and still fuses into QGemm / QLinearConv / QLinearMatMul. A DQ fed
    directly by INT4 runs unfused; one fed by INT2 makes onnxruntime 1.32 fail at
    ORT_ENABLE_EXTENDED and above (its fusion hands the int2 tensor to QGemm).
    """
    if container.bits >= 8:
        return [], stored, container
    wide = Container.INT8 if container.signed else Container.UINT8
    to = ir.DataType.from_numpy(wide.numpy_dtype)
    cast = ir.node("Cast", [stored], attributes={"to": to}, name=names(f"{prefix}_Cast"))
    return [cast], _typed_output(cast, names(f"{prefix}_widened"), to, stored), wide


@dataclasses.dataclass(frozen=True)
class StoredCodes:
    """Integer codes stored as an initializer, as the graph reads them.

    Attributes:
        nodes: The Cast of packed INT4/INT2 codes to 8 bits (empty otherwise).
        codes: The value the consumer reads (the initializer, or the Cast's output).
        stored: The initializer itself (what the file holds).
        container: The container of ``codes`` (8 bits after a Cast).
        zero_point: The zero point of the codes.
    """

    nodes: list[ir.Node]
    codes: ir.Value
    stored: ir.Value
    container: Container
    zero_point: int

    def zero_points(self, shape: tuple[int, ...]) -> np.ndarray:
        """The zero point as an array of ``shape`` in the codes' type."""
        return np.full(shape, self.zero_point, self.container.numpy_dtype)


def store_codes(
    graph: ir.Graph, names: Namer, ints: np.ndarray, container: Container, prefix: str,
    *, signed: bool = True,
) -> StoredCodes:  # fmt: skip
    """Store integers as a ``container`` initializer (``Cast`` to 8 bits when packed).

    Signed values in an unsigned container are stored as codes around the mid-range zero
    point (uint8: 128).
    """
    zero_point = container.zero_point(signed)
    codes_array = (np.asarray(ints, np.int64) + zero_point).astype(container.numpy_dtype)
    stored = add_initializer(graph, names, f"{prefix}_quantized", codes_array)
    nodes, codes, wide = _widen_sub_byte(names, stored, container, prefix)
    return StoredCodes(nodes, codes, stored, wide, zero_point)


def scale_initializer(graph: ir.Graph, names: Namer, fracs, prefix: str) -> ir.Value:
    """The scales ``2**-fracs`` (one, or one per channel) as a float32 initializer."""
    return add_initializer(graph, names, f"{prefix}_scale", _scale_array(fracs))


def constant_dq(
    graph: ir.Graph,
    names: Namer,
    ints: np.ndarray,
    container: Container,
    fracs: int | np.ndarray,
    axis: int | None,
    prefix: str,
    *,
    signed: bool = True,
) -> tuple[list[ir.Node], ir.Value, ir.Value]:
    """Store integers as a ``container`` initializer behind ``(Cast ->) DequantizeLinear``.

    Every DequantizeLinear gets an explicit zero point (int32 biases included), as
    onnxruntime's ORT-format "Runtime" optimizations and other QDQ consumers require.

    Args:
        graph: Graph that receives the initializers.
        names: Name source for the graph.
        ints: The integer values (already rounded and saturated).
        container: The storage type (INT4/INT2 are packed on disk and cast to 8 bits in
            the graph).
        fracs: One fraction, or one per channel along ``axis``.
        axis: The channel axis for per-channel fractions, else None.
        prefix: Base for the new names.
        signed: Whether the values are signed: in an unsigned container they are stored
            as codes around the mid-range zero point (uint8: 128).

    Returns:
        The new nodes (not yet inserted), the DQ output, and the integer initializer.
    """
    stored = store_codes(graph, names, ints, container, prefix, signed=signed)
    node, out = dequantize(graph, names, stored, stored.codes, fracs, axis, prefix)
    _typed_output(node, out.name or "", ir.DataType.FLOAT, stored.stored)
    return [*stored.nodes, node], out, stored.stored


def dequantize(
    graph: ir.Graph, names: Namer, stored: StoredCodes, codes: ir.Value, fracs,
    axis: int | None, prefix: str,
) -> tuple[ir.Node, ir.Value]:  # fmt: skip
    """A DequantizeLinear of ``codes`` (``stored``'s, or values looked up in them) with
    scales ``2**-fracs`` and an explicit zero point, per channel along ``axis`` when given."""
    scales = _scale_array(fracs)
    inputs = [
        codes,
        add_initializer(graph, names, f"{prefix}_scale", scales),
        add_initializer(graph, names, f"{prefix}_zero_point", stored.zero_points(scales.shape)),
    ]
    attrs = {} if scales.ndim == 0 else {"axis": axis}
    node = ir.node("DequantizeLinear", inputs, attributes=attrs, name=names(f"{prefix}_DQ"))
    out = node.outputs[0]
    out.name, out.dtype = names(f"{prefix}_dq"), ir.DataType.FLOAT
    return node, out


def fake_quant_model(aq: ActivationQuant, *, opset: int = 21) -> onnx.ModelProto:
    """A model ``y = DQ(Clip(Q(x)))`` over a float32 vector of any length.

    It is built by the same code as the pass, so it checks the activation numerics of
    every width/signedness/container against :func:`~.fixed_point.quantize_fixed`.
    """
    x = ir.val("x", ir.DataType.FLOAT, ["n"])
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": opset}, name="fake_quant")
    nodes, out = activation_qdq(graph, Namer(graph), x, aq, "x")
    graph.extend(nodes)
    out.name = "y"
    graph.outputs.append(out)
    ir_version = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)])
    return ir.to_proto(ir.Model(graph, ir_version=ir_version))
