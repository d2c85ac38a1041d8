"""Writing a refit back into a consumer: its weight and its bias, in the node's own layout."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxopt.graph import Namer, const_array, const_input
from onnxopt.optimizer.width.groups import WeightNode
from onnxopt.optimizer.width.refit import Fit, weights_from_fit
from onnxopt.optimizer.width.rewrite import set_const_input


def write_fit(
    graph: ir.Graph, nodes: list[ir.Node], spec: WeightNode, fit: Fit, names: Namer
) -> None:
    """Replace a consumer's weight and bias by a fit.

    Gemm stores ``W / alpha`` and ``b / beta`` (beta is set to 1 when it was 0); a Gemm or
    Conv without a bias gets one; a MatMul's bias goes into the constant of its bias Add
    (without one, the fit had no intercept).
    """
    node = nodes[spec.index]
    old = const_input(node, 1)
    set_const_input(graph, node, 1, weights_from_fit(spec, fit, old), names)
    bias = fit.bias.astype(old.dtype)
    if spec.op_type == "MatMul":
        if spec.bias is not None:
            add_node, k = nodes[spec.bias[0]], spec.bias[1]
            current = const_input(add_node, k)
            set_const_input(graph, add_node, k, current + bias.reshape(current.shape), names)
        return
    if spec.op_type == "Gemm":
        beta = spec.attrs["beta"]
        if beta == 0.0:
            node.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
            beta = 1.0
        old_bias = const_array(node.inputs[2]) if len(node.inputs) > 2 else None
        bias = (bias / np.float32(beta)).astype(old.dtype)
        if old_bias is not None and old_bias.ndim == 2:
            bias = bias.reshape(1, -1)
    set_const_input(graph, node, 2, bias, names)
