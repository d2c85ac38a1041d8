"""The channel analysis: walk the graph once, following channels op by op into groups.

See :mod:`.groups` for what a group is; :mod:`.propagate` and :mod:`.weight_ops` hold one
handler per op type, :mod:`.builder` the union-find state they update.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

from onnxopt.graph import const_array, is_default_domain
from onnxopt.optimizer.width.builder import Builder
from onnxopt.optimizer.width.groups import ChannelAnalysis
from onnxopt.optimizer.width.propagate import HANDLERS


def analyze_channels(model: onnx.ModelProto | ir.Model) -> ChannelAnalysis:
    """Find the channel groups of a model; the model is not modified.

    Shape inference is run on a copy first (the rank and static dims of tensors decide how
    channels flow through Reshape, Reduce and broadcasting ops).

    Args:
        model: The model (an ``onnx.ModelProto`` or an ``onnx_ir.Model``).

    Returns:
        The analysis: groups with their edits and freeze reasons, and the weight nodes.
    """
    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else model
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    graph = ir.serde.deserialize_model(inferred).graph
    builder = Builder(graph)
    for value in graph.inputs:
        builder.assign(value, builder.new_space(None, f"graph input {value.name!r}"), None)
    for i, node in enumerate(builder.nodes):
        _visit(builder, node, i)
    for value in graph.outputs:
        hit = builder.lookup(value)
        if hit is not None:
            builder.freeze(hit[0], f"reaches graph output {value.name!r}")
    return builder.finish()


_SUBGRAPH_TYPES = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
_WEIGHT_OPS = frozenset({"Gemm", "MatMul", "Conv"})


def _visit(builder: Builder, node: ir.Node, i: int) -> None:
    subgraphs = [a for a in node.attributes.values() if a.type in _SUBGRAPH_TYPES]
    handler = HANDLERS.get(node.op_type) if is_default_domain(node.domain) else None
    reason: str | None
    if subgraphs:
        reason = "has subgraphs"
        _freeze_captured(builder, subgraphs, f"{node.op_type} node {builder.names[i]!r}")
    elif handler is None:
        reason = "is not a channel-wise op the analysis knows"
    else:
        reason = handler(builder, node, i)
    if reason:
        label = f"{node.op_type} node {builder.names[i]!r} {reason}"
        if node.op_type in _WEIGHT_OPS:
            builder.refuse(i, reason)
        for value in node.inputs:
            hit = builder.lookup(value)
            if hit is not None:
                builder.freeze(hit[0], label)
    for value in node.outputs:
        if value is None or not value.name or builder.tracked(value):
            continue
        if const_array(value) is None:
            why = f"produced by {node.op_type} node {builder.names[i]!r} (channels not tracked)"
            builder.assign(value, builder.new_space(None, why), None)


def _freeze_captured(builder: Builder, attrs, label: str) -> None:
    """Freeze tracked values that a subgraph reads from the outer scope."""
    for attr in attrs:
        graphs = attr.value if attr.type == ir.AttributeType.GRAPHS else [attr.value]
        for graph in graphs:
            for inner in ir.traversal.RecursiveGraphIterator(graph):
                for value in inner.inputs:
                    hit = builder.lookup(value)
                    if hit is not None:
                        builder.freeze(hit[0], f"read inside a subgraph of {label}")
