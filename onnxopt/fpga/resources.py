"""Resource proxies computed from the quantized graph: counts, not synthesis estimates.

No vendor tool (Vivado/Vitis) runs here, so there are no LUT, DSP, BRAM or timing figures.
What the graph does tell, and what helps rank candidates for an FPGA:

* ``weight_bits``: the sum of every stored weight's and bias's true width (what on-chip
  weight storage holds);
* ``multipliers``: multiplications by (input width x weight width), counting only non-zero
  weights (a product with a constant zero is no hardware); with a reuse factor ``R`` hls4ml
  shares each multiplier ``R`` times, so ``ceil(n / R)`` of them per layer;
* ``bops``: bit operations, ``MACs * (b_a * b_w + b_a + b_w + log2(fan_in))`` per layer, the
  proxy of the quantized-network literature (Baskin et al., "UNIQ", ACM TOCS 2021).
"""

from __future__ import annotations

import dataclasses
import math

import onnx
import onnx_ir as ir

from onnxopt.graph import value_name
from onnxopt.optimizer.quantization.formats import QuantizedTensor, read_formats

_LAYERS = ("Gemm", "MatMul", "Conv")


@dataclasses.dataclass(frozen=True)
class LayerResources:
    """One quantized Gemm/MatMul/Conv layer."""

    node: str
    input_width: int
    weight_width: int
    weights: int
    nonzero_weights: int
    macs: int
    bops: int
    bias_bits: int


def _macs(node: ir.Node, weight: QuantizedTensor) -> tuple[int, int]:
    """(MACs per sample, fan-in) for a layer's weight tensor."""
    codes = weight.codes
    assert codes is not None
    if node.op_type == "Conv":
        out = node.outputs[0].shape
        spatial = math.prod(out.numpy()[2:]) if out is not None else 1
        fan_in = int(codes[0].size)
        return int(codes.size) * spatial, fan_in
    trans_b = node.op_type == "Gemm" and bool(node.attributes.get_int("transB", 0))
    fan_in = int(codes.shape[1] if trans_b else codes.shape[0])
    return int(codes.size), fan_in


def layer_resources(model: onnx.ModelProto) -> list[LayerResources]:
    """The quantized layers of a QDQ model (layers with a float input or weight are left out)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    ir_model = ir.from_proto(inferred)
    formats = read_formats(ir_model)
    rows = []
    for node in ir_model.graph:
        if node.op_type not in _LAYERS or len(node.inputs) < 2:
            continue
        x, w = (formats.get(value_name(v)) if v is not None else None for v in node.inputs[:2])
        if x is None or w is None or w.codes is None:
            continue
        b_value = node.inputs[2] if len(node.inputs) > 2 else None
        bias = formats.get(value_name(b_value)) if b_value is not None else None
        macs, fan_in = _macs(node, w)
        a, b = x.fmt.width, w.fmt.width
        nonzero = int((w.codes != 0).sum())
        bops = round(macs * (a * b + a + b + math.log2(max(fan_in, 1))))
        bias_bits = 0
        if bias is not None and bias.codes is not None:  # a computed bias is not stored
            bias_bits = bias.fmt.width * int(bias.codes.size)
        rows.append(
            LayerResources(node.name or "", a, b, int(w.codes.size), nonzero, macs, bops, bias_bits)
        )
    return rows


def resource_proxy(model: onnx.ModelProto, reuse_factor: int = 1) -> dict:
    """Plain-JSON resource proxies of a QDQ model (see the module docstring)."""
    layers = layer_resources(model)
    by_width: dict[str, int] = {}
    shared = 0
    for layer in layers:
        key = f"{layer.input_width}x{layer.weight_width}"
        by_width[key] = by_width.get(key, 0) + layer.nonzero_weights
        shared += math.ceil(layer.nonzero_weights / reuse_factor)
    return {
        "what": "counts from the graph, not synthesis estimates (no vendor tools here)",
        "weight_bits": sum(lyr.weights * lyr.weight_width + lyr.bias_bits for lyr in layers),
        "multiplications_by_width": dict(sorted(by_width.items())),
        "multipliers_after_reuse": shared,
        "reuse_factor": reuse_factor,
        "bops": sum(lyr.bops for lyr in layers),
        "layers": [dataclasses.asdict(lyr) for lyr in layers],
    }
