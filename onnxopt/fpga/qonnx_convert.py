"""QDQ -> QONNX: every quantizer of a fixed-point QDQ graph becomes one QONNX ``Quant`` node.

A ``Quant(x, scale, zero_point, bit_width)`` node (domain ``qonnx.custom_op.general``,
attributes ``signed``, ``narrow``, ``rounding_mode``) computes
``clip(round_half_even(x / scale + zp), lo, hi) - zp) * scale``. Each quantized tensor
read by :func:`~onnxopt.optimizer.quantization.formats.read_formats` becomes:

* an activation ``Q -> (Clip) -> DQ`` (or ``Clip -> Q -> DQ``): ``Quant`` on the same float
  input with scale ``2**-f``, zero point 0 and its true width; a signed value stored as
  uint8 + 128 becomes ``signed=1`` (keeping the zero point would compute other values);
* a constant (integer initializer -> (Cast) -> DQ): its exact real values as a float32
  initializer behind a ``Quant`` with its true width (from the model's bit-width metadata,
  not from the container), per channel when the weights were.

``narrow`` is always 0: onnxopt's ranges are the full two's complement range. The Quant
output keeps the DQ output's name, so every other node, shape and graph output is unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnx_ir as ir

from onnxopt.errors import UsageError
from onnxopt.optimizer.quantization.formats import (
    BIT_WIDTHS_KEY,
    QuantizedTensor,
    Role,
    node_label,
    read_formats,
)

QONNX_DOMAIN = "qonnx.custom_op.general"


@dataclasses.dataclass(frozen=True)
class QonnxModel:
    """A QONNX model and the formats its Quant nodes carry.

    Attributes:
        model: The QONNX model (ONNX with ``Quant`` nodes), shapes inferred.
        formats: The quantized tensors of the QDQ model, by the name their readers see
            (which the Quant output keeps).
        quant_nodes: Quant node name -> the quantized tensor's name.
    """

    model: onnx.ModelProto
    formats: dict[str, QuantizedTensor]
    quant_nodes: dict[str, str]


def _quant_name(tensor: QuantizedTensor, names: set[str]) -> str:
    base = tensor.name.removesuffix("_dq") if tensor.name.endswith("_dq") else tensor.name
    name, i = f"{base}_quant", 1
    while name in names:
        name, i = f"{base}_quant_{i}", i + 1
    names.add(name)
    return name


def _initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    value = ir.Value(name=name, const_value=ir.tensor(array, name=name))
    graph.register_initializer(value)
    return value


def _scale(tensor: QuantizedTensor, ndim: int) -> np.ndarray:
    fracs = np.asarray(tensor.fmt.frac, dtype=np.int64)
    scale = np.ldexp(np.float32(1.0), -fracs).astype(np.float32)
    if fracs.ndim and tensor.axis is not None:
        # numpy broadcasting aligns trailing axes: [C, 1, ..., 1] up to the last axis
        scale = scale.reshape([fracs.shape[0]] + [1] * (ndim - tensor.axis - 1))
    return scale


def _float_values(tensor: QuantizedTensor) -> np.ndarray:
    exact = tensor.values()
    values = exact.astype(np.float32)
    if not np.array_equal(values.astype(np.float64), exact):
        raise UsageError(
            f"initializer {tensor.source!r}: its {tensor.fmt.width}-bit values are not exact in "
            "float32 (over 24 significant bits); QONNX and hls4ml read weights as float32"
        )
    return values


class _Converter:
    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.values = {v.name: v for v in _all_values(self.graph)}
        self.names = {n.name for n in self.graph if n.name}
        self.quant_nodes: dict[str, str] = {}

    def convert(self, formats: dict[str, QuantizedTensor]) -> None:
        nodes = {node_label(n): n for n in self.graph}
        for tensor in formats.values():
            self._replace(tensor, [nodes[name] for name in tensor.nodes])
        self._drop_unused_initializers()
        self.model.opset_imports[QONNX_DOMAIN] = 1
        self.model.metadata_props.pop(BIT_WIDTHS_KEY, None)  # its names are gone

    def _replace(self, tensor: QuantizedTensor, chain: list[ir.Node]) -> None:
        dq_out = chain[-1].outputs[0]
        name = _quant_name(tensor, self.names)
        if tensor.role is Role.ACTIVATION:
            data = self.values[tensor.source]
            ndim = 0
        else:
            array = _float_values(tensor)
            data = _initializer(self.graph, f"{name}_value", array)
            ndim = array.ndim
        inputs = [
            data,
            _initializer(self.graph, f"{name}_scale", _scale(tensor, ndim)),
            _initializer(self.graph, f"{name}_zero_point", np.zeros((), np.float32)),
            _initializer(self.graph, f"{name}_bit_width", np.array(tensor.fmt.width, np.float32)),
        ]
        attributes: dict[str, int | str] = {
            "signed": int(tensor.fmt.signed),
            "narrow": 0,
            "rounding_mode": "ROUND",
        }
        quant = ir.node("Quant", inputs, attributes, domain=QONNX_DOMAIN, name=name)
        out = quant.outputs[0]
        out.dtype, out.shape = ir.DataType.FLOAT, dq_out.shape
        self.graph.insert_before(chain[0], quant)
        dq_out.replace_all_uses_with(out, replace_graph_outputs=True)
        out_name = dq_out.name
        self._remove_chain(chain)
        out.name = out_name
        self.values[out_name] = out
        self.quant_nodes[name] = tensor.name

    def _remove_chain(self, chain: list[ir.Node]) -> None:
        # the chain's nodes may feed other readers (one Q, two DQs): keep those
        for node in reversed(chain):
            if not any(v.uses() or v.is_graph_output() for v in node.outputs):
                self.graph.remove(node, safe=True)

    def _drop_unused_initializers(self) -> None:
        for name, value in list(self.graph.initializers.items()):
            if not value.uses() and not value.is_graph_output() and value not in self.graph.inputs:
                del self.graph.initializers[name]


def _all_values(graph: ir.Graph):
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph:
        yield from node.outputs


def to_qonnx(model: onnx.ModelProto) -> QonnxModel:
    """The QONNX form of a fixed-point QDQ model (``model`` is not modified).

    Raises:
        UsageError: A model without quantized tensors, or one whose quantizers are not
            fixed point (see :func:`read_formats`).
    """
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    ir_model = ir.from_proto(inferred)
    formats = read_formats(ir_model)
    if not formats:
        raise UsageError(
            "the model has no quantized tensors (no DequantizeLinear): it is a float model; "
            "quantize it first: onnxopt quantize MODEL.onnx -o Q.onnx"
        )
    converter = _Converter(ir_model)
    converter.convert(formats)
    proto = ir.to_proto(ir_model)
    return QonnxModel(proto, formats, dict(converter.quant_nodes))
