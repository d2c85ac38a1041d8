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
    assert is_nonneg(_value(graph, name), graph) is nonneg


def test_graph_inputs_are_not_known_non_negative(graph):
    assert not is_nonneg(graph.inputs[0], graph)


def test_unsupported_reason(graph):
    nodes = {node.op_type: node for node in graph}
    assert unsupported_reason(nodes["MatMul"], graph) is None
    assert "not quantized" in unsupported_reason(nodes["Relu"], graph)
