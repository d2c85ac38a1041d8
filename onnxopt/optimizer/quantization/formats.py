"""Read the fixed-point format of every quantized tensor of a QDQ graph.

The reader looks at the graph only, never at how onnxopt happened to write it, so it reads
models from other tools and the variations onnxopt may emit:

* a ``DequantizeLinear`` with or without an explicit zero point (absent means 0 of the
  input's type);
* signed values in a signed container with zero point 0, or in an unsigned container with
  the mid-range zero point (uint8 + 128): both are a signed value of that width;
* narrow activation widths as a ``Clip`` on the integer codes between Q and DQ, or as a
  float ``Clip`` right before Q whose bounds are a whole number of steps; a float Clip whose
  bounds are no ``w``-bit range belongs to the model, not to the quantizer;
* the true widths of constants in the ``onnxopt.bit_widths`` metadata ({initializer name:
  bits}); without it a constant is as wide as its container (int32 biases: as wide as their
  values need);
* INT4/INT2 initializers widened by a ``Cast`` before their DQ;
* integer tables looked up by a ``Gather`` before their DQ (quantized embeddings): the
  table's format (a DQ along the last axis is per column of the table).

Weights read by ``MatMulInteger`` (dynamic activations) have no DQ and are not listed.

A format is ``(width, frac, signed)``: the value ``code * 2**-frac`` with ``code`` in the
signed ``[-2**(w-1), 2**(w-1) - 1]`` or unsigned ``[0, 2**w - 1]`` range, which is hls4ml's
``ap_fixed<w, w - frac>`` / ``ap_ufixed<w, w - frac>``. A constant stored at a finer scale
than its declared width holds (a bias at the accumulator scale ``2**-(f_in + f_w)``) is read
at the coarsest scale that holds its codes exactly in that width.
"""

from __future__ import annotations

import dataclasses
import enum
import json

import numpy as np
import onnx
import onnx_ir as ir

from onnxopt.errors import UsageError
from onnxopt.graph import input_value
from onnxopt.optimizer.quantization.metadata import BIT_WIDTHS_KEY

MAX_WIDTH = 32
"""The widest format read: what onnxruntime's integer types hold (int32 biases)."""


class Role(enum.StrEnum):
    """Whether a quantized tensor is computed at run time or stored."""

    ACTIVATION = "activation"
    CONSTANT = "constant"


@dataclasses.dataclass(frozen=True)
class FixedFormat:
    """A fixed-point format: ``code * 2**-frac``, ``code`` a ``width``-bit integer.

    Attributes:
        width: Total bits, the sign included.
        frac: Fraction bits (may be negative or exceed ``width``); a tuple gives one per
            channel (per-channel weights).
        signed: Two's complement range when True, ``[0, 2**width - 1]`` when False.
    """

    width: int
    frac: int | tuple[int, ...]
    signed: bool

    @property
    def per_channel(self) -> bool:
        """Whether the format has one fraction per channel."""
        return isinstance(self.frac, tuple)

    @property
    def code_range(self) -> tuple[int, int]:
        """The integer codes' range ``(lo, hi)``."""
        if self.signed:
            return -(2 ** (self.width - 1)), 2 ** (self.width - 1) - 1
        return 0, 2**self.width - 1

    @property
    def max_frac(self) -> int:
        """The finest fraction (the only one for per-tensor formats)."""
        return max(self.frac) if isinstance(self.frac, tuple) else self.frac

    @property
    def value_range(self) -> tuple[float, float]:
        """The real range ``(lo, hi)`` (the widest channel's for per-channel formats)."""
        lo, hi = self.code_range
        coarsest = min(self.frac) if isinstance(self.frac, tuple) else self.frac
        return float(np.ldexp(lo, -coarsest)), float(np.ldexp(hi, -coarsest))

    def label(self) -> str:
        """``s8.5`` / ``u4.4``: signedness, width and fraction (for tables)."""
        frac = ",".join(map(str, self.frac)) if isinstance(self.frac, tuple) else self.frac
        return f"{'s' if self.signed else 'u'}{self.width}.{frac}"


@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """One quantized tensor: what its readers see and how it is stored.

    Attributes:
        name: The DequantizeLinear output (the value its readers consume).
        role: Activation (Q -> DQ at run time) or constant (an integer initializer).
        fmt: The fixed-point format.
        source: The float value the quantizer reads (activations) or the integer
            initializer (constants).
        nodes: The quantizer's nodes in graph order (float Clip, Q, code Clip, Cast, DQ).
        axis: The channel axis of a per-channel format, else None.
        codes: Constants only: the integer codes with the zero point removed (int64).
    """

    name: str
    role: Role
    fmt: FixedFormat
    source: str
    nodes: tuple[str, ...]
    axis: int | None = None
    codes: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def values(self) -> np.ndarray:
        """Constants: the real values ``codes * 2**-frac`` (float64, exact)."""
        assert self.codes is not None, "only constants carry values"
        fracs = np.asarray(self.fmt.frac, dtype=np.int64)
        if fracs.ndim:
            shape = [1] * self.codes.ndim
            shape[self.axis or 0] = fracs.shape[0]
            fracs = fracs.reshape(shape)
        return np.ldexp(self.codes.astype(np.float64), -fracs)


def node_label(node: ir.Node) -> str:
    """A node's name, or ``<OpType> -> <first output>`` for an unnamed node."""
    return node.name or f"{node.op_type} -> {node.outputs[0].name}"


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _fracs(node: ir.Node) -> int | tuple[int, ...]:
    """The fraction(s) of a DQ/Q scale; a usage error unless every scale is 2**-f."""
    scale = _const(node.inputs[1])
    if scale is None:
        raise UsageError(f"node {node_label(node)!r}: its scale is not a constant")
    mantissa, exponent = np.frexp(scale.astype(np.float64))
    if scale.size == 0 or not np.all(mantissa == 0.5):
        bad = scale.reshape(-1)[np.argmax(mantissa.reshape(-1) != 0.5)]
        raise UsageError(
            f"node {node_label(node)!r}: scale {float(bad):g} is not a power of two, so the "
            "tensor is not fixed point; quantize the model with onnxopt quantize"
        )
    fracs = (1 - exponent).astype(np.int64).reshape(-1)
    return int(fracs[0]) if scale.ndim == 0 else tuple(int(f) for f in fracs)


def _container(value: ir.Value, zero_point: np.ndarray | None) -> np.dtype:
    if zero_point is not None:
        return np.dtype(zero_point.dtype)
    if value.dtype is not None:
        return np.dtype(value.dtype.numpy())
    return np.dtype(np.uint8)  # QuantizeLinear's default output type


def _signedness(node: ir.Node, dtype: np.dtype, zero_point: np.ndarray | None) -> tuple[bool, int]:
    """``(signed, zero point)`` of a Q/DQ: a signed value in a signed container, or in an
    unsigned one with the mid-range zero point; a usage error for any other zero point."""
    info = np.iinfo(dtype)
    zps = np.zeros(1, np.int64) if zero_point is None else zero_point.astype(np.int64).reshape(-1)
    zp = int(zps[0])
    mid = 2 ** (info.bits - 1)
    if np.any(zps != zp) or (info.min < 0 and zp != 0) or (info.min == 0 and zp not in (0, mid)):
        raise UsageError(
            f"node {node_label(node)!r}: zero point {zp} in {dtype} is not fixed point (0, or "
            f"{mid} for signed values in an unsigned type); quantize the model with onnxopt"
        )
    return info.min < 0 or zp == mid, zp


def width_of_range(lo: int, hi: int, signed: bool) -> int | None:
    """The width whose full code range is exactly ``[lo, hi]``, else None."""
    span = hi - lo + 1
    if span < 2 or span & (span - 1):
        return None
    width = span.bit_length() - 1
    expected = (-(2 ** (width - 1)), 2 ** (width - 1) - 1) if signed else (0, 2**width - 1)
    return width if (lo, hi) == expected else None


class _Reader:
    """Walks one graph's DequantizeLinear nodes."""

    def __init__(self, model: ir.Model) -> None:
        self.graph = model.graph
        raw = model.metadata_props.get(BIT_WIDTHS_KEY, "{}")
        try:
            self.bit_widths = {str(k): int(v) for k, v in json.loads(raw).items()}
        except (ValueError, TypeError, AttributeError):
            raise UsageError(f"metadata {BIT_WIDTHS_KEY} is not a JSON object of bits") from None

    def read(self) -> dict[str, QuantizedTensor]:
        out = {}
        for node in self.graph:
            if node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx"):
                tensor = self._read_dq(node)
                if tensor.fmt.width > MAX_WIDTH:
                    raise UsageError(
                        f"tensor {tensor.source!r}: width {tensor.fmt.width} bits is over "
                        f"{MAX_WIDTH}; fixed-point formats here are 2..{MAX_WIDTH} bits"
                    )
                out[tensor.name] = tensor
        return out

    def _read_dq(self, dq: ir.Node) -> QuantizedTensor:
        codes_in = dq.inputs[0]
        assert codes_in is not None
        zero_point = _const(dq.inputs[2]) if len(dq.inputs) > 2 else None
        fracs = _fracs(dq)
        axis = dq.attributes.get_int("axis", 1) if isinstance(fracs, tuple) else None
        dtype = _container(codes_in, zero_point)
        signed, zp = _signedness(dq, dtype, zero_point)
        stored, cast = codes_in, None
        producer = codes_in.producer()
        if producer is not None and producer.op_type == "Gather" and producer.inputs[0]:
            stored = producer.inputs[0]  # a looked-up table: the table's format
            producer = stored.producer()
        if (
            producer is not None
            and producer.op_type == "Cast"
            and _const(producer.inputs[0]) is not None
        ):
            stored, cast = input_value(producer, 0), producer
        if _const(stored) is not None and stored not in self.graph.inputs:
            return self._constant(dq, stored, cast, fracs, axis, signed, zp, dtype)
        return self._activation(dq, fracs, signed, zp, dtype, axis)

    def _constant(self, dq, stored, cast, fracs, axis, signed, zp, dtype) -> QuantizedTensor:
        table = _const(stored)
        assert table is not None  # _read_dq sends only constants here
        codes = table.astype(np.int64) - zp
        if axis is not None and axis < 0:
            axis += codes.ndim
        width = self.bit_widths.get(stored.name or "")
        if width is None:
            width = np.iinfo(dtype).bits if np.iinfo(dtype).bits <= 16 else _needed_width(codes)
        codes, fracs = _coarsest(codes, fracs, width, signed, axis)
        if codes is None:
            raise UsageError(
                f"initializer {stored.name!r}: its values do not fit the {width} bits that "
                f"{BIT_WIDTHS_KEY} declares; the metadata and the weights disagree"
            )
        nodes = tuple(node_label(n) for n in (cast, dq) if n is not None)
        fmt = FixedFormat(int(width), fracs, signed)
        return QuantizedTensor(
            dq.outputs[0].name or "", Role.CONSTANT, fmt, stored.name or "", nodes, axis, codes
        )

    def _activation(self, dq, fracs, signed, zp, dtype, axis) -> QuantizedTensor:
        if isinstance(fracs, tuple):
            raise UsageError(f"node {node_label(dq)!r}: per-channel activation scales are not read")
        chain = [dq]
        codes = dq.inputs[0]
        lo, hi = int(np.iinfo(dtype).min) - zp, int(np.iinfo(dtype).max) - zp
        producer = codes.producer()
        if producer is not None and producer.op_type == "Clip":
            bounds = [b for b in map(_const, producer.inputs[1:3]) if b is not None]
            if len(bounds) < 2:
                raise UsageError(f"node {node_label(producer)!r}: clip bounds are not constants")
            lo, hi = int(bounds[0]) - zp, int(bounds[1]) - zp
            chain.insert(0, producer)
            producer = producer.inputs[0].producer()
        if producer is None or producer.op_type != "QuantizeLinear":
            raise UsageError(
                f"node {node_label(dq)!r} dequantizes {codes.name!r}, which no QuantizeLinear "
                "produces; only Q -> (Clip) -> DQ chains and integer initializers are read"
            )
        chain.insert(0, producer)
        if _fracs(producer) != fracs:
            raise UsageError(
                f"nodes {node_label(producer)!r} and {node_label(dq)!r} use other scales"
            )
        source = producer.inputs[0]
        float_clip = source.producer() if source is not None else None
        if float_clip is not None and float_clip.op_type == "Clip" and len(source.uses()) == 1:
            narrowed = _float_clip_codes(float_clip, fracs)
            if narrowed is not None and lo <= narrowed[0] and narrowed[1] <= hi:
                lo, hi = narrowed
                chain.insert(0, float_clip)
                source = float_clip.inputs[0]
        width = width_of_range(lo, hi, signed)
        if width is None:
            raise UsageError(
                f"node {node_label(chain[-2])!r} clips codes to [{lo}, {hi}], which is no "
                f"{'signed' if signed else 'unsigned'} fixed-point range"
            )
        fmt = FixedFormat(width, fracs, signed)
        names = tuple(node_label(n) for n in chain)
        return QuantizedTensor(
            dq.outputs[0].name or "", Role.ACTIVATION, fmt, source.name or "", names
        )


def _float_clip_codes(clip: ir.Node, frac: int) -> tuple[int, int] | None:
    """A float Clip's bounds in codes of ``2**-frac``, or None unless they are a w-bit range
    (then the Clip is the model's own op)."""
    values = []
    for i in (1, 2):
        value = clip.inputs[i] if len(clip.inputs) > i else None
        array = _const(value)
        if array is None:
            return None
        code = np.ldexp(float(array), frac)
        if code != np.rint(code):
            return None
        values.append(int(code))
    lo, hi = values
    if width_of_range(lo, hi, lo < 0) is None:
        return None
    return lo, hi


def _needed_width(codes: np.ndarray) -> int:
    """The signed width that holds every code (2 at least)."""
    if codes.size == 0:
        return 2
    top = int(max(np.max(codes), -np.min(codes) - 1, 0))
    return max(2, top.bit_length() + 1)


def _fits(codes: np.ndarray, width: int, signed: bool) -> bool:
    lo, hi = (-(2 ** (width - 1)), 2 ** (width - 1) - 1) if signed else (0, 2**width - 1)
    return codes.size == 0 or (int(codes.min()) >= lo and int(codes.max()) <= hi)


def _coarsest(codes, fracs, width, signed, axis):
    """Codes and fraction(s) shifted right by the fewest exact bits that make them fit (per
    channel for per-channel fractions); ``(None, fracs)`` when no exact shift fits."""
    if isinstance(fracs, tuple):
        moved = np.moveaxis(codes, axis, 0)
        parts = [_coarsest(moved[c], f, width, signed, None) for c, f in enumerate(fracs)]
        if any(part[0] is None for part in parts):
            return None, fracs
        stacked = np.moveaxis(np.stack([part[0] for part in parts]), 0, axis)
        return stacked, tuple(int(part[1]) for part in parts)
    shifted, frac = codes, fracs
    while not _fits(shifted, width, signed):
        if np.any(shifted % 2):
            return None, fracs
        shifted, frac = shifted // 2, frac - 1
    return shifted, frac


def read_formats(model: onnx.ModelProto | ir.Model) -> dict[str, QuantizedTensor]:
    """Every quantized tensor of ``model``'s main graph, by DQ output name, in graph order.

    Raises:
        UsageError: A scale that is not a power of two, a zero point that is not fixed
            point, clip bounds that are no width's range, a width over 32 bits, or bit-width
            metadata the stored values contradict; each names the node or tensor.
    """
    ir_model = ir.from_proto(model) if isinstance(model, onnx.ModelProto) else model
    return _Reader(ir_model).read()
