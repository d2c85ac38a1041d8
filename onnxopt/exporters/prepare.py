"""Graph preparation shared by exported and user-supplied ONNX models.

Constant folding and dead-code removal (onnxscript's optimizer); BatchNorm folded into the
preceding Gemm/Conv/ConvTranspose (onnxscript's ``fuse_batchnorm`` rewrite rules) or, on a
``[N, C]`` tensor, into the following Gemm/MatMul (:mod:`onnxopt.exporters.bn_fold`), both
exact in eval mode, on the graph input too; the exporters' debugging metadata (stack traces,
fx node names, namespaces per node) stripped, since on a small model it is a fifth of the
file. A BatchNorm with a nonlinearity (Relu) on both sides, or one before a Conv (whose zero
padding the shift would change), cannot be folded exactly and stays as its own node.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx


@dataclass(frozen=True)
class PrepareResult:
    """The prepared model and how many BatchNormalization nodes were folded away."""

    model: onnx.ModelProto
    batchnorms_folded: int
    batchnorms_left: int


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == op_type)


def prepare_model(model: onnx.ModelProto) -> PrepareResult:
    """Optimize and fold BatchNorm; the input model is not modified."""
    import onnx_ir as ir
    import onnxscript.optimizer
    from onnxscript.rewriter import RewriteRuleSet
    from onnxscript.rewriter.rules import common as rules

    from onnxopt.exporters.bn_fold import fold_into_next_rules

    before = _count(model, "BatchNormalization")
    ir_model = ir.serde.deserialize_model(model)  # a fresh copy: the caller's proto is untouched
    onnxscript.optimizer.optimize(ir_model)
    RewriteRuleSet(
        [
            rules.fuse_batchnorm_into_gemm_rule,
            rules.fuse_batchnorm_into_conv_rule,
            rules.fuse_batchnorm_into_conv_transpose_rule,
            *fold_into_next_rules().rules,  # tried after the preceding layer: both are exact
        ]
    ).apply_to_model(ir_model)
    onnxscript.optimizer.optimize(ir_model)
    out = ir.serde.serialize_model(ir_model)
    keep_layer_names(model, out)
    strip_debug_metadata(out)
    left = _count(out, "BatchNormalization")
    return PrepareResult(out, before - left, left)


def keep_layer_names(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    """Give the layers a fold rebuilt their original names, in place.

    A fold replaces a Conv/Gemm/MatMul by a new node (named ``node_Conv_0`` by the rewriter);
    quantization and width configs address layers by name, so each rebuilt layer takes the
    name of the layer of its op type that disappeared, in graph order (a fold rebuilds
    exactly the one layer it absorbs a BatchNorm into).
    """
    kept, original = {n.name for n in after.graph.node}, {n.name for n in before.graph.node}
    for op_type in {n.op_type for n in after.graph.node}:
        gone = [n.name for n in before.graph.node
                if n.op_type == op_type and n.name and n.name not in kept]  # fmt: skip
        new = [n for n in after.graph.node if n.op_type == op_type and n.name not in original]
        if gone and len(gone) == len(new):
            for node, name in zip(new, gone, strict=True):
                node.name = name


def strip_debug_metadata(model: onnx.ModelProto) -> None:
    """Drop per-node doc strings and metadata (exporter stack traces and names), in place."""
    for node in model.graph.node:
        node.ClearField("doc_string")
        del node.metadata_props[:]
    for value in (*model.graph.value_info, *model.graph.input, *model.graph.output):
        del value.metadata_props[:]
    for tensor in model.graph.initializer:
        del tensor.metadata_props[:]
