"""BatchNormalization folded into the Gemm or MatMul that FOLLOWS it (onnxscript rewrite rules).

onnxscript's ``fuse_batchnorm`` rules fold a BatchNorm into the layer before it. A BatchNorm
on a ``[N, C]`` tensor that feeds a linear layer folds just as exactly into the layer after
it: with ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``,
``W (s * x + t) + b = (W * s) x + (W t + b)``. Only the 2-D case is folded: on ``[N, C, ...]``
BatchNorm scales axis 1 while MatMul contracts the last one. A following Conv is left alone:
its zero padding would see ``t`` where the BatchNorm output had zeros, so the fold is exact
only without padding, and the exporters already fold Conv -> BatchNorm the other way.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter.pattern import MatchResult, RewriteRuleClassBase, RewriteRuleSet


def _const(value: ir.Value | None) -> np.ndarray | None:
    """The value as an array if it is a constant initializer that no caller can override."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def _checked_const(value: ir.Value | None) -> np.ndarray:
    """A value that the rule's ``check`` found to be a constant initializer."""
    array = _const(value)
    assert array is not None, "check() lets only constant weights through"
    return array


def _affine(bn: ir.Node) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm as ``x * s + t`` per channel (computed in float64, stored as float32)."""
    params = [_const(v) for v in bn.inputs[1:5]]  # checked to be constants
    gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
    eps = bn.attributes.get_float("epsilon", 1e-5)
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale


def _check_batchnorm(bn: ir.Node, result: MatchResult) -> MatchResult:
    if bn.attributes.get_int("training_mode", 0):
        return result.fail(f"{bn.name}: BatchNormalization in training mode")
    if len(bn.inputs) != 5 or any(_const(v) is None for v in bn.inputs[1:]):
        return result.fail(f"{bn.name}: BatchNorm statistics are not constant initializers")
    x = bn.inputs[0]
    if x is None or x.shape is None or len(x.shape) != 2:
        return result.fail(f"{bn.name}: BatchNorm input is not known to be 2-D [N, C]")
    return result


def _not_shared(values, matched: set[ir.Node], result: MatchResult) -> MatchResult:
    # The folded weights reuse the originals' names; another user would see the new values.
    for value in values:
        if value is not None and any(user not in matched for user, _ in value.uses()):
            return result.fail(f"{value.name} is shared with another node")
    return result


class FoldBatchNormIntoNextGemm(RewriteRuleClassBase):
    """``Gemm(BatchNormalization(x), B, C)`` -> ``Gemm(x, B', C')`` (any transB, alpha, beta)."""

    def pattern(self, op, x):
        normed = op.BatchNormalization(x, _allow_other_inputs=True, _outputs=["normed"])
        return op.Gemm(normed, _allow_other_inputs=True, _outputs=["out"])

    # onnxscript calls check(context, **bindings) and overrides name them (its own examples
    # do); its base signature check(op, *args, **kwargs) cannot say so, hence the ignore.
    def check(self, context, x, normed, out, **_) -> MatchResult:  # type: ignore[override]
        del context, x  # unused
        bn, gemm = normed.producer(), out.producer()
        result = _check_batchnorm(bn, MatchResult())
        if not result:
            return result
        if gemm.attributes.get_int("transA", 0):
            return result.fail(f"{gemm.name}: Gemm with transA")
        if gemm.inputs[0] is not normed or _const(gemm.inputs[1]) is None:
            return result.fail(f"{gemm.name}: the BatchNorm is not A or B is not constant")
        if len(gemm.inputs) > 2 and gemm.inputs[2] is not None and _const(gemm.inputs[2]) is None:
            return result.fail(f"{gemm.name}: bias C is not a constant initializer")
        return _not_shared(gemm.inputs[1:], {bn, gemm}, result)

    def rewrite(self, op, x, normed, out, **_):
        bn, gemm = normed.producer(), out.producer()
        scale, shift = _affine(bn)
        weight = gemm.inputs[1]
        w = _const(weight)
        trans_b = gemm.attributes.get_int("transB", 0)
        w_kn = (w.T if trans_b else w).astype(np.float64)  # [C, M]
        alpha = gemm.attributes.get_float("alpha", 1.0)
        beta = gemm.attributes.get_float("beta", 1.0)
        bias_in = gemm.inputs[2] if len(gemm.inputs) > 2 else None
        c = _const(bias_in)
        bias = alpha * (shift @ w_kn) + (beta * c.astype(np.float64) if c is not None else 0.0)
        scaled = w * (scale[None, :] if trans_b else scale[:, None])
        attributes = {k: v for k, v in gemm.attributes.items() if k != "beta"}  # beta folded in
        return op.op(
            "Gemm",
            x,
            op.initializer(ir.tensor(scaled.astype(w.dtype)), name=weight.name),
            op.initializer(
                ir.tensor(np.asarray(bias, dtype=w.dtype)),
                name=bias_in.name if bias_in is not None else f"{weight.name}_bn_bias",
            ),
            **attributes,
        )


def _matmul_check(bn: ir.Node, matmul: ir.Node, normed: ir.Value, result: MatchResult):
    result = _check_batchnorm(bn, result)
    if not result:
        return result
    w = _const(matmul.inputs[1])
    if matmul.inputs[0] is not normed or w is None or w.ndim != 2:
        return result.fail(f"{matmul.name}: the BatchNorm is not the left input of x @ W")
    return result


class FoldBatchNormIntoNextMatMulAdd(RewriteRuleClassBase):
    """``Add(MatMul(BatchNormalization(x), W), b)`` -> ``Add(MatMul(x, W'), b')``."""

    def pattern(self, op, x, b):
        normed = op.BatchNormalization(x, _allow_other_inputs=True, _outputs=["normed"])
        return op.Add(op.MatMul(normed, _allow_other_inputs=True, _outputs=["product"]), b)

    # onnxscript calls check(context, **bindings) and overrides name them (its own examples
    # do); its base signature check(op, *args, **kwargs) cannot say so, hence the ignore.
    def check(self, context, x, b, normed, product, **_) -> MatchResult:  # type: ignore[override]
        del context, x  # unused
        bn, matmul = normed.producer(), product.producer()
        result = _matmul_check(bn, matmul, normed, MatchResult())
        if not result:
            return result
        if _const(b) is None:
            return result.fail("the bias b is not a constant initializer")
        add = next(iter(product.uses())).node  # the matcher saw that the Add is its only user
        return _not_shared([matmul.inputs[1], b], {bn, matmul, add}, result)

    def rewrite(self, op, x, b, normed, product, **_):
        bn, matmul = normed.producer(), product.producer()
        w, bias = _folded_matmul(bn, matmul)
        new_b = (bias + _const(b).astype(np.float64)).astype(w.dtype)
        return op.Add(
            op.MatMul(x, op.initializer(ir.tensor(w), name=matmul.inputs[1].name)),
            op.initializer(ir.tensor(new_b), name=b.name),
        )


class FoldBatchNormIntoNextMatMul(RewriteRuleClassBase):
    """``MatMul(BatchNormalization(x), W)`` -> ``Add(MatMul(x, W'), W t)`` (no bias before)."""

    def pattern(self, op, x):
        normed = op.BatchNormalization(x, _allow_other_inputs=True, _outputs=["normed"])
        return op.MatMul(normed, _allow_other_inputs=True, _outputs=["product"])

    # onnxscript calls check(context, **bindings) and overrides name them (its own examples
    # do); its base signature check(op, *args, **kwargs) cannot say so, hence the ignore.
    def check(self, context, x, normed, product, **_) -> MatchResult:  # type: ignore[override]
        del context, x  # unused
        bn, matmul = normed.producer(), product.producer()
        result = _matmul_check(bn, matmul, normed, MatchResult())
        if not result:
            return result
        users = [use.node for use in product.uses()]
        if len(users) == 1 and users[0].op_type == "Add":
            other = [v for v in users[0].inputs if v is not product]
            if len(other) == 1 and _const(other[0]) is not None:
                return result.fail("a constant bias follows: FoldBatchNormIntoNextMatMulAdd")
        return _not_shared([matmul.inputs[1]], {bn, matmul}, result)

    def rewrite(self, op, x, normed, product, **_):
        bn, matmul = normed.producer(), product.producer()
        w, bias = _folded_matmul(bn, matmul)
        weight = matmul.inputs[1]
        return op.Add(
            op.MatMul(x, op.initializer(ir.tensor(w), name=weight.name)),
            op.initializer(ir.tensor(bias.astype(w.dtype)), name=f"{weight.name}_bn_bias"),
        )


def _folded_matmul(bn: ir.Node, matmul: ir.Node) -> tuple[np.ndarray, np.ndarray]:
    """The weight scaled per input row and the bias ``t @ W`` the BatchNorm shift becomes."""
    scale, shift = _affine(bn)
    w = _checked_const(matmul.inputs[1])
    return (w * scale[:, None]).astype(w.dtype), shift @ w.astype(np.float64)


def fold_into_next_rules() -> RewriteRuleSet:
    """The rules, MatMul+Add before MatMul alone (which defers to it when a bias follows)."""
    add_rule = FoldBatchNormIntoNextMatMulAdd.rule()
    return RewriteRuleSet(
        [
            FoldBatchNormIntoNextGemm.rule(),
            *add_rule.commute(),
            FoldBatchNormIntoNextMatMul.rule(),
        ]
    )
