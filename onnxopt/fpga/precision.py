"""Exact hls4ml types for every tensor of the graph, from the model's fixed-point formats.

Each tensor is either float32 (computed in float in the QDQ model: a BatchNormalization on the
raw input, its Relu) or an exact fixed-point type: integer codes in ``[lo, hi]`` at scale
``2**-frac``. The codes' range is computed from the graph, not assumed:

* a Quant node: its format's full range;
* MatMul with fixed-point weights ``W``: per output ``j``, ``sum_i min/max(W_ij * x_lo,
  W_ij * x_hi)`` at fraction ``f_x + f_w``; adding the bias shifts the range by its codes;
* Relu clamps the range at 0; Identity, Dropout, Flatten and Reshape keep it.

The type is the narrowest ``ap_fixed``/``ap_ufixed`` holding that range at that fraction, so
the accumulator and every intermediate result are exact: the only roundings are the
model's own quantizers (``AP_RND_CONV`` = round half to even, ``AP_SAT``), as in
onnxruntime. hls4ml's accumulators wrap (``AP_WRAP``), so a partial sum outside the final
range cannot change the exact final value either.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir

from onnxopt.errors import UsageError
from onnxopt.fpga.hls_graph import PASS_THROUGH
from onnxopt.fpga.qonnx_convert import QONNX_DOMAIN
from onnxopt.graph import value_name

FLOAT = "float"


@dataclasses.dataclass(frozen=True)
class Fixed:
    """Integer codes in ``[lo, hi]`` at scale ``2**-frac``."""

    lo: int
    hi: int
    frac: int

    @property
    def signed(self) -> bool:
        return self.lo < 0

    @property
    def width(self) -> int:
        """The fewest bits holding ``[lo, hi]`` (sign included when signed)."""
        if self.signed:
            return max(1, max(self.hi, -self.lo - 1).bit_length() + 1)
        return max(1, self.hi.bit_length())

    def hls(self, quantizer: bool = False) -> str:
        """hls4ml's precision string, e.g. ``fixed<12,4>``; with ``quantizer``, rounding half to
        even and saturating (what a QuantizeLinear does)."""
        kind = "fixed" if self.signed else "ufixed"
        modes = ",RND_CONV,SAT" if quantizer else ""
        return f"{kind}<{self.width},{self.width - self.frac}{modes}>"

    def at(self, frac: int) -> Fixed:
        """The same range at a finer fraction."""
        shift = frac - self.frac
        assert shift >= 0
        return Fixed(self.lo << shift, self.hi << shift, frac)


TensorType = Fixed | str


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = None if value is None else ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _const_of(node: ir.Node, index: int) -> np.ndarray:
    """A Quant input that the QONNX format makes constant (scale, bit width, weights)."""
    array = _const(node.inputs[index])
    if array is None:
        raise UsageError(f"node {node.name!r}: input {index} of the Quant is not a constant")
    return array


def _quant_fixed(node: ir.Node) -> Fixed:
    scale = _const_of(node, 1)
    bits = int(_const_of(node, 3))
    mantissa, exponent = np.frexp(np.asarray(scale, np.float64))
    if not np.all(exponent == exponent.reshape(-1)[0]):
        raise UsageError(
            f"node {node.name!r}: per-channel fractions; hls4ml has one weight type per layer, "
            'so quantize its weights per tensor (granularity = "per_tensor")'
        )
    frac = int(1 - exponent.reshape(-1)[0])
    signed = bool(node.attributes.get_int("signed", 1))
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return Fixed(lo, hi, frac)


def _codes(node: ir.Node, fmt: Fixed) -> np.ndarray:
    """A constant Quant's integer codes."""
    values = _const_of(node, 0).astype(np.float64)
    return np.rint(np.ldexp(values, fmt.frac)).astype(np.int64)


def _matmul(x: Fixed, w_codes: np.ndarray, w_frac: int) -> Fixed:
    w = w_codes.reshape(w_codes.shape[0], -1) if w_codes.ndim > 1 else w_codes.reshape(-1, 1)
    bound = int(np.abs(w).max(initial=0)) * max(abs(x.lo), abs(x.hi)) * max(w.shape[0], 1)
    if bound >= 2**62:  # exact Python integers past int64
        w = w.astype(object)
    a, b = w * x.lo, w * x.hi
    lo = int(np.minimum(a, b).sum(axis=0).min(initial=0))
    hi = int(np.maximum(a, b).sum(axis=0).max(initial=0))
    return Fixed(lo, hi, x.frac + w_frac)


def _add(x: Fixed, b_codes: np.ndarray, b_frac: int) -> Fixed:
    frac = max(x.frac, b_frac)
    x = x.at(frac)
    b = b_codes.astype(np.int64) << (frac - b_frac)
    return Fixed(x.lo + int(b.min(initial=0)), x.hi + int(b.max(initial=0)), frac)


class _Types:
    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.types: dict[str, TensorType] = {}
        self.constants: dict[str, tuple[np.ndarray, int]] = {}

    def run(self) -> dict[str, TensorType]:
        graph_input = self.graph.inputs[0]
        self.types[value_name(graph_input)] = self._input_type(graph_input)
        for node in self.graph:
            self._visit(node)
        return self.types

    def _input_type(self, value: ir.Value) -> TensorType:
        readers = [use.node for use in value.uses()]
        quants = [n for n in readers if n.op_type == "Quant" and n.domain == QONNX_DOMAIN]
        formats = {_quant_fixed(n) for n in quants}
        if readers and len(quants) == len(readers) and len(formats) == 1:
            return formats.pop()
        return FLOAT

    def _in(self, node: ir.Node, i: int = 0) -> TensorType:
        return self.types[value_name(node.inputs[i])]

    def _visit(self, node: ir.Node) -> None:
        out = value_name(node.outputs[0])
        op = node.op_type
        if op == "Quant" and node.domain == QONNX_DOMAIN:
            fmt = _quant_fixed(node)
            self.types[out] = fmt
            if _const(node.inputs[0]) is not None:
                self.constants[out] = (_codes(node, fmt), fmt.frac)
        elif op == "MatMul":
            w_codes, w_frac = self.constants[value_name(node.inputs[1])]
            self.types[out] = _matmul(self._fixed(node), w_codes, w_frac)
        elif op == "Add":
            data, const = node.inputs
            if value_name(data) in self.constants:
                data, const = const, data
            b_codes, b_frac = self.constants[value_name(const)]
            self.types[out] = _add(self._fixed(node, data), b_codes, b_frac)
        elif op == "Relu":
            t = self._in(node)
            if isinstance(t, Fixed):
                t = Fixed(max(t.lo, 0), max(t.hi, 0), t.frac)
            self.types[out] = t
        elif op == "BatchNormalization":
            self.types[out] = FLOAT
        elif op in PASS_THROUGH:
            self.types[out] = self._in(node)
        else:
            raise UsageError(f"node {node.name!r}: no exact type for {op}")

    def _fixed(self, node: ir.Node, value: ir.Value | None = None) -> Fixed:
        t = self.types[value_name(value or node.inputs[0])]
        if t == FLOAT:
            raise UsageError(
                f"node {node.name!r} ({node.op_type}) reads a float tensor: quantize its input "
                "(an FPGA layer computes in fixed point)"
            )
        assert isinstance(t, Fixed)
        return t


def tensor_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Every tensor's exact type (by value name) in an :func:`~.hls_graph.hls_graph` model."""
    return _Types(ir.from_proto(model).graph).run()
