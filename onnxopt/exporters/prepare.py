"""Graph preparation shared by exported and user-supplied ONNX models.

Constant folding and dead-code removal (onnxscript's optimizer) and BatchNorm folding into
the preceding Gemm/Conv/ConvTranspose (onnxscript's ``fuse_batchnorm`` rewrite rules, exact
in eval mode). BatchNorm that follows a Relu or sits on the graph input cannot be folded
exactly and stays as its own node.
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

    before = _count(model, "BatchNormalization")
    ir_model = ir.serde.deserialize_model(model)  # a fresh copy: the caller's proto is untouched
    onnxscript.optimizer.optimize(ir_model)
    RewriteRuleSet(
        [
            rules.fuse_batchnorm_into_gemm_rule,
            rules.fuse_batchnorm_into_conv_rule,
            rules.fuse_batchnorm_into_conv_transpose_rule,
        ]
    ).apply_to_model(ir_model)
    onnxscript.optimizer.optimize(ir_model)
    out = ir.serde.serialize_model(ir_model)
    left = _count(out, "BatchNormalization")
    return PrepareResult(out, before - left, left)
