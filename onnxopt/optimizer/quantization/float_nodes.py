"""Which nodes of a quantized graph still compute in float, and why."""

from __future__ import annotations

from collections.abc import Mapping

import onnx_ir as ir

from onnxopt.graph import is_default_domain
from onnxopt.optimizer.quantization.graph_analysis import SUPPORTED_OPS

CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Clip"})
_FLOAT_TYPES = frozenset(
    {ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE, ir.DataType.BFLOAT16}
)


def _reads_float_constant(node: ir.Node) -> bool:
    for value in node.inputs:
        if value is None or not value.is_initializer():
            continue
        tensor = value.const_value
        if tensor is not None and tensor.dtype in _FLOAT_TYPES:
            return True
    return False


def _rescales_integers(node: ir.Node) -> bool:
    """Whether ``node`` is the scale product or rescale of a dynamic MatMulInteger chain."""
    if node.op_type != "Mul":
        return False
    for value in node.inputs:
        producer = None if value is None else value.producer()
        if producer is None:
            continue
        if producer.op_type == "DynamicQuantizeLinear":
            return True
        if producer.op_type == "Cast" and (source := producer.inputs[0]) is not None:
            upstream = source.producer()
            if upstream is not None and upstream.op_type == "MatMulInteger":
                return True
    return False


def _skipped_reason(node: ir.Node, reason: str, by_name: frozenset[str]) -> str:
    text = reason if f"'{node.op_type}'" in reason else f"{node.op_type} not quantized: {reason}"
    if node.name in by_name:
        text += f'; its [by_name."{node.name}"] settings have no effect'
    return text


def float_nodes(
    graph: ir.Graph,
    skipped: Mapping[str, str],
    disabled: frozenset[str] = frozenset(),
    by_name: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Every node left in float with the reason, the reason starting with its op type.

    These are the nodes the pass skipped (unsupported op type or form), the nodes the config
    disabled, other nodes computing with float parameters, and control-flow nodes (their
    subgraphs may compute with weights the pass never sees).

    Args:
        graph: The quantized graph.
        skipped: Node -> why the pass could not quantize it.
        disabled: Nodes the config left in float (``enabled = false``).
        by_name: Nodes the config names (a setting on a node that cannot be quantized is
            said to have no effect).
    """
    out = {}
    for node in graph:
        name = node.name or (node.outputs[0].name if node.outputs else "") or node.op_type
        if node.op_type in _QDQ or _rescales_integers(node):
            continue
        if node.op_type in CONTROL_FLOW and is_default_domain(node.domain):
            out[name] = (
                f"{node.op_type} (control flow): onnxopt does not rewrite inside its subgraphs"
            )
        elif name in skipped:
            out[name] = _skipped_reason(node, skipped[name], by_name)
        elif name in disabled:
            out[name] = f"{node.op_type} disabled by the config (enabled = false)"
        elif node.op_type == "Gather" and _reads_float_constant(node):
            out[name] = "Gather table left in float: a [by_type.gather] entry quantizes it"
        elif _reads_float_constant(node):
            out[name] = (
                f"{node.op_type} is not quantized by onnxopt (only {', '.join(SUPPORTED_OPS)})"
            )
    return out
