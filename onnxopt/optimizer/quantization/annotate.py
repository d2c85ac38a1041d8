"""From config to specs: decide, per node, what each tensor's fixed-point format is.

The annotator reads the merged config of every Gemm/MatMul/Conv (default, by type, by name)
and of the Gather tables a ``gather`` or by-name entry asks for,
resolves fraction widths (a number; ``"NA"`` = width // 2; ``"auto"`` = the fewest integer
bits that cover the calibrated range for activations, or the tensor's own values for
weights and biases) and signedness (unsigned when calibration never saw a negative value),
and returns frozen :class:`NodeQuantSpec` objects for the QDQ pass. It never edits a graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxopt.config.quantization import LayerQuant, QuantizationConfig
from onnxopt.errors import ConfigError, did_you_mean
from onnxopt.optimizer.quantization.calibration import Range
from onnxopt.optimizer.quantization.fixed_point import frac_for_range, na_frac
from onnxopt.optimizer.quantization.graph_analysis import is_embedding
from onnxopt.optimizer.quantization.spec import (
    ActivationMode,
    FracFit,
    Granularity,
    NodeQuantSpec,
    TensorSpec,
)

DEFAULT_OPS = ("Gemm", "MatMul", "Conv")
"""Op types ``[default]`` reaches; Gather tables need a ``gather`` or by-name entry."""
QUANTIZABLE = (*DEFAULT_OPS, "Gather")
AUTO_OUTPUT_WIDTH = 8


@dataclass(frozen=True)
class Annotation:
    """Specs for the nodes to quantize, and the nodes the config leaves in float."""

    specs: dict[str, NodeQuantSpec]
    disabled: list[str] = field(default_factory=list)


def needs_calibration(graph: ir.Graph, config: QuantizationConfig) -> bool:
    """Whether any activation the pass will quantize asks for an ``"auto"`` fraction."""
    layers = _layers(graph, config)
    enabled = _static(layers)
    for name in enabled:
        node, layer = layers[name]
        if layer.data_in_frac_width == "auto":
            return True
        if layer.data_out_frac_width == "auto" and (
            layer.data_out_width is not None or _needs_output_q(node, enabled)
        ):
            return True
    return False


def _in_scope(node: ir.Node, config: QuantizationConfig) -> bool:
    if node.name in config.by_name:
        return True
    if node.op_type == "Gather":
        return "gather" in config.by_type and is_embedding(node)
    return node.op_type in DEFAULT_OPS


def _layers(graph: ir.Graph, config: QuantizationConfig) -> dict[str, tuple[ir.Node, LayerQuant]]:
    """``{name: (node, merged layer config)}`` for the quantizable and by-name nodes."""
    return {
        node.name: (node, config.for_node(node.name, node.op_type))
        for node in graph
        if node.name is not None and _in_scope(node, config)
    }


def _mode(node: ir.Node, layer: LayerQuant) -> ActivationMode:
    if node.op_type == "Gather":
        return ActivationMode.WEIGHT_ONLY
    return ActivationMode(layer.activation)


def _static(layers: Mapping[str, tuple[ir.Node, LayerQuant]]) -> set[str]:
    """The enabled nodes with static activations: the ones whose input Q requantizes."""
    return {
        name for name, (node, layer) in layers.items()
        if layer.enabled and _mode(node, layer) is ActivationMode.STATIC
    }  # fmt: skip


def _check_names(graph: ir.Graph, config: QuantizationConfig) -> None:
    names = {n.name for n in graph}
    for name in config.by_name:
        if name not in names:
            hint = did_you_mean(name, [n.name or "" for n in graph if n.op_type in QUANTIZABLE])
            raise ConfigError(f"by_name.{name}: no node {name!r} in the model; {hint}")


def _weight_frac(frac, width: int) -> int | None:
    if frac == "auto":
        return None  # the pass takes it from the tensor's own values
    return na_frac(width) if frac == "NA" else int(frac)


def _activation(tensor: str, width: int, frac, ranges: Mapping[str, Range], where: str):
    seen = ranges.get(tensor)
    signed = None if seen is None else not seen.non_negative
    if frac == "NA":
        value = na_frac(width)
    elif frac == "auto":
        if seen is None:
            raise ConfigError(f"{where}: 'auto' needs calibration data for tensor {tensor!r}")
        value = int(frac_for_range(max(seen.max_abs, 1e-12), width, bool(signed)))
    else:
        value = int(frac)
    return TensorSpec(width=width, frac=value, signed=signed)


def _output_value(node: ir.Node) -> ir.Value:
    """The value the pass quantizes for data_out: the Relu's output when a lone Relu follows."""
    out = node.outputs[0]
    users = out.consumers()
    if len(users) == 1 and users[0].op_type == "Relu":
        return users[0].outputs[0]
    return out


def _needs_output_q(node: ir.Node, quantized: set[str]) -> bool:
    """Whether a Conv's output reaches no quantized input, so nothing requantizes it.

    onnxruntime fuses Conv into QLinearConv only with a QuantizeLinear on its output (after a
    lone Relu). The next layer's input Q serves when the output feeds a quantized node
    directly or through MaxPool (onnxruntime moves Q across it); before a float op such as
    ReduceMean it does not, and the Conv would run in float without its own output Q.
    """
    if node.op_type != "Conv":
        return False
    for user in _output_value(node).consumers():
        if user.name in quantized:
            continue
        if user.op_type == "MaxPool" and all(
            n.name in quantized for n in user.outputs[0].consumers()
        ):
            continue
        return True
    return False


def _weight_spec(layer: LayerQuant, granularity: str) -> TensorSpec:
    mse = layer.weight_frac_width == "mse"
    return TensorSpec(
        width=layer.weight_width,
        granularity=Granularity(layer.weight_granularity or granularity),
        frac=None if mse else _weight_frac(layer.weight_frac_width, layer.weight_width),
        fit=FracFit.MSE if mse else FracFit.RANGE,
    )


def _node_spec(
    node: ir.Node, layer: LayerQuant, ranges, granularity: str, output_q: bool
) -> NodeQuantSpec:
    mode = _mode(node, layer)
    if mode is not ActivationMode.STATIC:
        return NodeQuantSpec(_weight_spec(layer, granularity), None, None, activation=mode)
    where = f"node {node.name!r}"
    data_out = None
    if layer.data_out_width is not None or output_q:
        # An output Q added only for fusion is 8-bit: the fused kernel writes 8-bit codes
        # anyway, and a narrower one would cost accuracy nobody asked for.
        width = layer.data_out_width or AUTO_OUTPUT_WIDTH
        frac = layer.data_out_frac_width
        data_out = _activation(_output_value(node).name or "", width, frac, ranges, where)
    has_bias = len(node.inputs) > 2 and node.inputs[2] is not None
    data_in = node.inputs[0]
    data_in_name = (data_in.name if data_in is not None else None) or ""
    return NodeQuantSpec(
        weight=_weight_spec(layer, granularity),
        bias=TensorSpec(width=layer.bias_width,
                        frac=_weight_frac(layer.bias_frac_width, layer.bias_width))
        if has_bias else None,
        data_in=_activation(data_in_name, layer.data_in_width, layer.data_in_frac_width,
                            ranges, where),
        data_out=data_out,
    )  # fmt: skip


def annotate(
    graph: ir.Graph, config: QuantizationConfig, ranges: Mapping[str, Range]
) -> Annotation:
    """Specs for every enabled Gemm/MatMul/Conv node of ``graph``.

    Args:
        graph: the float model's graph (BatchNorm already folded).
        config: the quantization config.
        ranges: calibrated activation ranges by tensor name (may be empty when no
            activation uses ``"auto"``).

    Raises:
        ConfigError: a by-name entry names no node (closest names listed), or ``"auto"``
            lacks calibration data.
    """
    _check_names(graph, config)
    layers = _layers(graph, config)
    enabled = {name for name, (_, layer) in layers.items() if layer.enabled}
    static = _static(layers)
    specs = {
        name: _node_spec(node, layer, ranges, config.granularity, _needs_output_q(node, static))
        for name, (node, layer) in layers.items() if name in enabled
    }  # fmt: skip
    return Annotation(specs, [name for name in layers if name not in enabled])
