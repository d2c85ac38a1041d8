"""Which activations the pass proves non-negative (and so quantizes unsigned)."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import pytest

from onnxopt.optimizer.quantization.graph_analysis import is_nonneg, unsupported_reason

MODEL = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 4, 2, 2] x) => (float[N, 4] y, float[N, 4] z, float[N, 4] u, float[N, 4, 2, 2] v)
<float lo = {0.0}, float neg = {-1.0}, float hi = {6.0},
 float[4, 4] w = {1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1}>
{
    r = Relu (x)
    m = ReduceMean <axes = [2, 3], keepdims = 0> (r)
    y = Identity (m)
    f = Flatten (x)
    z = ReduceMax <axes = [2, 3], keepdims = 0> (x)
    c = Clip (x, lo, hi)
    u = ReduceMean <axes = [2, 3], keepdims = 0> (c)
    v = Clip (r, neg, hi)
    t = Transpose <perm = [1, 0]> (y)
    mm = MatMul (y, w)
}
"""


@pytest.fixture(scope="module")
def graph() -> ir.Graph:
    return ir.from_proto(onnx.parser.parse_model(MODEL)).graph


def _value(graph: ir.Graph, name: str) -> ir.Value:
    return next(out for node in graph for out in node.outputs if out.name == name)


@pytest.mark.parametrize(
    ("name", "nonneg"),
    [
        ("r", True),
        ("m", True),  # mean of a Relu
        ("y", True),
        ("t", True),
        ("f", False),  # graph input: unknown sign
        ("z", False),
        ("c", True),  # Clip with a constant min >= 0
        ("u", True),
        ("v", False),  # Clip with a negative min
        ("mm", False),
    ],
)
def test_is_nonneg(graph, name, nonneg):
    assert is_nonneg(_value(graph, name)) is nonneg


def test_graph_inputs_are_not_known_non_negative(graph):
    assert not is_nonneg(graph.inputs[0])


def test_unsupported_reason(graph):
    nodes = {node.op_type: node for node in graph}
    assert unsupported_reason(nodes["MatMul"]) is None
    assert "not quantized" in unsupported_reason(nodes["Relu"])


# Every op whose output is non-negative for any input, written out here (not read from the
# module): removing one from the analysis would quantize its output as signed, wasting a bit.
NONNEG_OPS = ["Relu", "Sigmoid", "Softmax", "Abs", "Exp", "Softplus", "HardSigmoid"]
SIGNED_OPS = ["Tanh", "Neg", "LeakyRelu", "Elu", "Identity"]


def _unary(op: str) -> onnx.ModelProto:
    text = f"""
    <ir_version: 10, opset_import: ["" : 21]>
    g (float[N, 6] x) => (float[N, 6] y) {{ y = {op} (x) }}
    """
    return onnx.parser.parse_model(text)


@pytest.mark.parametrize("op", NONNEG_OPS + SIGNED_OPS)
def test_each_op_is_non_negative_exactly_when_onnxruntime_says_so(op):
    import numpy as np
    import onnxruntime as ort

    model = _unary(op)
    graph = ir.from_proto(model).graph
    claimed = is_nonneg(graph.node(0).outputs[0])
    assert claimed is (op in NONNEG_OPS)
    x = np.random.default_rng(0).normal(0, 3, (64, 6)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": x})[0]
    assert bool((y >= 0).all()) is claimed  # the signed ops do go negative on this data


@pytest.mark.parametrize(
    "op",
    ["MaxPool <kernel_shape = [1]>", "Flatten", "Identity", "Transpose <perm = [0, 2, 1]>",
     "ReduceMax <keepdims = 1>"],
)  # fmt: skip
def test_sign_preserving_ops_keep_a_relu_non_negative(op):
    text = f"""
    <ir_version: 10, opset_import: ["" : 21]>
    g (float[N, 2, 6] x) => (float y) {{ r = Relu (x) y = {op} (r) }}
    """
    graph = ir.from_proto(onnx.parser.parse_model(text)).graph
    assert is_nonneg(graph.node(1).outputs[0])
    inner = f"""
    <ir_version: 10, opset_import: ["" : 21]>
    g (float[N, 2, 6] x) => (float y) {{ r = Neg (x) y = {op} (r) }}
    """
    assert not is_nonneg(ir.from_proto(onnx.parser.parse_model(inner)).graph.node(1).outputs[0])
