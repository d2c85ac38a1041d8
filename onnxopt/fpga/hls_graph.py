"""The QONNX graph hls4ml's ONNX front end reads, and what it cannot take.

hls4ml's parser takes ``MatMul`` (a constant second input becomes a Dense layer) and
``Add``, not ``Gemm``; it wants a shape for every node input, C++-safe names, and computes a
float BatchNormalization's scale as ``gamma / sqrt(var + eps)``, which is not what
onnxruntime computes (``gamma * (1 / sqrt(var + eps))``, then ``beta - mean * scale``). So on a
copy of the QONNX model:

* ``Gemm(A, Quant(W), Quant(b))`` -> ``MatMul(A, Quant(W^T))`` + ``Add(Quant(b))``;
* a float BatchNormalization gets onnxruntime's own float32 scale and bias as ``gamma`` and
  ``beta`` (mean 0, variance 1, epsilon 0): hls4ml then computes ``x * scale + bias`` with
  onnxruntime's values, bit for bit;
* every node and the input get C identifiers as names (``name_map`` keeps the originals).

:func:`unsupported` lists, before hls4ml runs, every node the export cannot make bit-exact or
hls4ml cannot build, each with its reason.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TypeGuard

import numpy as np
import onnx
import onnx_ir as ir

from onnxopt.fpga.qonnx_convert import QONNX_DOMAIN
from onnxopt.graph import input_value
from onnxopt.optimizer.quantization.formats import node_label

PASS_THROUGH = frozenset({"Identity", "Dropout", "Flatten", "Reshape"})
"""Ops that only move values (hls4ml skips or reshapes them)."""

_REASONS = {
    "Conv": "Conv layers are not covered by the hls4ml export (it needs qonnx's channels-last "
    "conversion); Gemm/MatMul networks are",
    "Softmax": "hls4ml computes Softmax with lookup tables, which cannot match onnxruntime "
    "bit for bit; end the graph at the logits (their argmax is the same)",
    "If": "control flow: hls4ml has no layer for it",
    "Loop": "control flow: hls4ml has no layer for it",
    "Scan": "control flow: hls4ml has no layer for it",
}


@dataclasses.dataclass(frozen=True)
class HlsGraph:
    """The graph handed to hls4ml.

    Attributes:
        model: The rewritten QONNX model with value_info for every tensor.
        name_map: hls4ml-safe node name -> the node name in the QDQ model (Gemm halves map
            to their Gemm; new nodes without a QDQ counterpart are absent).
        input_name: The (safe) graph input name, hls4ml's input layer.
    """

    model: onnx.ModelProto
    name_map: dict[str, str]
    input_name: str


def _safe(name: str, used: set[str], fallback: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_]", "_", name or fallback).strip("_") or fallback
    if base[0].isdigit():
        base = f"n_{base}"
    candidate, i = base, 1
    while candidate in used:
        candidate, i = f"{base}_{i}", i + 1
    used.add(candidate)
    return candidate


def _const(value: ir.Value | None) -> np.ndarray | None:
    tensor = None if value is None else ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def _const_of(value: ir.Value) -> np.ndarray:
    """The contents of a value already checked to be constant (a constant Quant's input or a
    BatchNormalization parameter)."""
    array = _const(value)
    assert array is not None, f"{value.name!r} is not a constant"
    return array


def _like(value: ir.Value, other: ir.Value) -> None:
    """Give ``value`` the element type (when known) and shape of ``other``."""
    if other.dtype is not None:
        value.dtype = other.dtype
    value.shape = other.shape


def _is_quant(node: ir.Node | None) -> TypeGuard[ir.Node]:
    return node is not None and node.op_type == "Quant" and node.domain == QONNX_DOMAIN


def _quant_of_const(value: ir.Value | None) -> ir.Node | None:
    node = None if value is None else value.producer()
    if _is_quant(node) and _const(node.inputs[0]) is not None:
        return node
    return None


def _gemm_reason(node: ir.Node) -> str | None:
    attrs = node.attributes
    if attrs.get_int("transA", 0):
        return "Gemm with transA = 1: transpose its input first"
    if attrs.get_float("alpha", 1.0) != 1.0 or attrs.get_float("beta", 1.0) != 1.0:
        return "Gemm with alpha or beta != 1 is not fixed point (onnxopt leaves it in float)"
    if _quant_of_const(node.inputs[1]) is None:
        return "Gemm whose weights are not quantized: an FPGA design needs fixed-point weights"
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        if _quant_of_const(node.inputs[2]) is None:
            return "Gemm whose bias is not quantized (a float bias)"
    return None


def _node_reason(node: ir.Node) -> str | None:
    op = node.op_type
    if _is_quant(node):
        return None
    if node.domain not in ("", "ai.onnx"):
        return f"custom op {node.domain}.{op}: hls4ml has no layer for it"
    if op in _REASONS:
        return _REASONS[op]
    if op == "Gemm":
        return _gemm_reason(node)
    if op == "MatMul":
        ok = _quant_of_const(node.inputs[1]) is not None
        return None if ok else "MatMul whose second input is not quantized constant weights"
    if op == "Add":
        ok = any(_quant_of_const(v) is not None for v in node.inputs)
        return None if ok else "Add of two computed tensors (residual): not covered yet"
    if op == "BatchNormalization":
        params_const = all(_const(v) is not None for v in node.inputs[1:5])
        on_float = not _is_quant(input_value(node, 0).producer())
        if not params_const:
            return "BatchNormalization with computed parameters"
        if not on_float:
            return (
                "BatchNormalization on a quantized tensor: fold it into its Gemm first "
                "(onnxopt export MODEL.onnx -o folded.onnx)"
            )
        return None
    if op == "Relu" or op in PASS_THROUGH:
        return None
    return (
        f"{op}: not part of what the hls4ml export makes bit-exact (Gemm, MatMul, Add, Relu, "
        "BatchNormalization, Quant, Identity, Dropout, Flatten, Reshape)"
    )


def unsupported(qonnx: onnx.ModelProto) -> dict[str, str]:
    """Node (name or op and output) -> why the hls4ml export refuses it; empty when none.

    Softmax over a tensor of more than 2 dimensions is named as such.
    """
    out = {}
    graph = ir.from_proto(qonnx).graph
    for node in graph:
        reason = _node_reason(node)
        label = node_label(node)
        if node.op_type == "Softmax" and node.inputs[0] is not None:
            shape = node.inputs[0].shape
            if shape is not None and len(shape) > 2:
                reason = f"Softmax over a {len(shape)}-D tensor: hls4ml has no such layer"
        if reason is not None:
            out[label] = reason
    return out


class _Rewriter:
    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph

    def gemm_to_matmul(self, gemm: ir.Node) -> None:
        weight_q = _quant_of_const(gemm.inputs[1])
        assert weight_q is not None
        if gemm.attributes.get_int("transB", 0):
            stored = input_value(weight_q, 0)
            array = np.ascontiguousarray(_const_of(stored).T)
            stored.const_value = ir.tensor(array, name=stored.name)
            stored.shape = ir.Shape(array.shape)
            weight_q.outputs[0].shape = ir.Shape(array.shape)
        out = gemm.outputs[0]
        matmul = ir.node("MatMul", [gemm.inputs[0], weight_q.outputs[0]], name=gemm.name)
        _like(matmul.outputs[0], out)
        nodes = [matmul]
        result = matmul.outputs[0]
        if len(gemm.inputs) > 2 and gemm.inputs[2] is not None:
            add = ir.node("Add", [result, gemm.inputs[2]], name=f"{gemm.name}_bias")
            _like(add.outputs[0], out)
            nodes.append(add)
            result = add.outputs[0]
        self.graph.insert_before(gemm, nodes)
        out.replace_all_uses_with(result, replace_graph_outputs=True)
        name = out.name
        self.graph.remove(gemm, safe=True)
        result.name = name

    def refold_batchnorm(self, node: ir.Node) -> None:
        params = (_const_of(input_value(node, i)).astype(np.float32) for i in range(1, 5))
        gamma, beta, mean, var = params
        eps = np.float32(node.attributes.get_float("epsilon", 1e-5))
        # onnxruntime's CPU kernel: inv_std = 1 / sqrt(var + eps); scale = inv_std * gamma;
        # bias = beta - mean * scale; y = x * scale + bias (float32 throughout)
        inv_std = np.float32(1.0) / np.sqrt(var + eps)
        scale = inv_std * gamma
        bias = beta - mean * scale
        values = [scale, bias, np.zeros_like(mean), np.ones_like(var)]
        for i, array in enumerate(values, start=1):
            name = f"{node.name}_{('scale', 'bias', 'mean', 'var')[i - 1]}"
            value = ir.Value(name=name, const_value=ir.tensor(array.astype(np.float32), name=name))
            self.graph.register_initializer(value)
            node.replace_input_with(i, value)
        node.attributes["epsilon"] = ir.AttrFloat32("epsilon", 0.0)

    def rename(self) -> tuple[dict[str, str], str]:
        used: set[str] = set()
        name_map = {}
        graph_input = self.graph.inputs[0]
        graph_input.name = _safe(graph_input.name or "input", used, "input")
        for i, node in enumerate(self.graph):
            original = node.name or ""
            node.name = _safe(original, used, f"{node.op_type}_{i}")
            name_map[node.name] = original
        return name_map, graph_input.name


def _value_info(proto: onnx.ModelProto) -> None:
    """value_info for every initializer too: hls4ml's parser reads a shape for each input."""
    known = {v.name for v in proto.graph.value_info} | {v.name for v in proto.graph.input}
    for tensor in proto.graph.initializer:
        if tensor.name not in known:
            proto.graph.value_info.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
            )


def hls_graph(qonnx: onnx.ModelProto) -> HlsGraph:
    """The QONNX model rewritten for hls4ml's ONNX front end (``qonnx`` is not modified).

    Call :func:`unsupported` first: this assumes every node is supported.
    """
    model = ir.from_proto(onnx.ModelProto.FromString(qonnx.SerializeToString()))
    rewriter = _Rewriter(model)
    for node in list(model.graph):
        if node.op_type == "Gemm":
            rewriter.gemm_to_matmul(node)
        elif node.op_type == "BatchNormalization":
            rewriter.refold_batchnorm(node)
    for name, value in list(model.graph.initializers.items()):
        if not value.uses():  # hls4ml makes a layer of every initializer, used or not
            del model.graph.initializers[name]
    name_map, input_name = rewriter.rename()
    proto = ir.to_proto(model)
    _value_info(proto)
    return HlsGraph(proto, name_map, input_name)
