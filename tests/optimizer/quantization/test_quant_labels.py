"""Kernel labels agree with the graph onnxruntime really runs (fused or float, per node)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from qdq_helpers import _model, cnn_model, mlp_model

from onnxopt.config import validate
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.optimizer.quantization.labels import CONV_NEEDS_OUTPUT_Q, HonestLabel, agree_with
from onnxopt.optimizer.quantization.quantizer import Quantizer

RNG = np.random.default_rng(3)


def _images(n: int = 64) -> np.ndarray:
    return RNG.standard_normal((n, 1, 8, 8)).astype(np.float32)


def _conv_relu_conv() -> onnx.ModelProto:
    """digits-cnn's first blocks: Conv -> Relu -> Conv -> Relu -> MaxPool -> Conv -> Relu ->
    GlobalAveragePool -> Flatten -> Gemm (no Q of its own after the first two Convs)."""
    w = {
        "w1": RNG.standard_normal((4, 1, 3, 3)) * 0.5,
        "w2": RNG.standard_normal((4, 4, 3, 3)) * 0.3,
        "w3": RNG.standard_normal((8, 4, 3, 3)) * 0.3,
        "w4": RNG.standard_normal((10, 8)) * 0.5,
    }
    b = {"b1": np.full(4, 0.1), "b2": np.full(4, 0.1), "b3": np.full(8, 0.1), "b4": np.zeros(10)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in (w | b).items()]
    pads = {"pads": [1, 1, 1, 1]}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", **pads),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], "conv2", **pads),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], "pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p2", "w3", "b3"], ["c3"], "conv3", **pads),
        helper.make_node("Relu", ["c3"], ["r3"], "relu3"),
        helper.make_node("GlobalAveragePool", ["r3"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "w4", "b4"], ["y"], "fc", transB=1),
    ]
    return _model(nodes, inits, ["N", 1, 8, 8], ["N", 10])


def _matmul_chain(between: list[str]) -> onnx.ModelProto:
    """MatMul 'mm1' -> ops ``between`` -> MatMul 'mm2'."""
    inits = [
        numpy_helper.from_array((RNG.standard_normal((16, 8)) * 0.3).astype(np.float32), "w1"),
        numpy_helper.from_array((RNG.standard_normal((8, 10)) * 0.3).astype(np.float32), "w2"),
    ]
    nodes, value = [helper.make_node("MatMul", ["x", "w1"], ["h0"], "mm1")], "h0"
    for i, op in enumerate(between):
        nodes.append(helper.make_node(op, [value], [f"h{i + 1}"], f"op{i}"))
        value = f"h{i + 1}"
    nodes.append(helper.make_node("MatMul", [value, "w2"], ["y"], "mm2"))
    return _model(nodes, inits, ["N", 16], ["N", 10])


def _optimized_op_types(model: onnx.ModelProto, tmp_path) -> dict[str, str]:
    """Node name -> op type in onnxruntime's optimized graph, read here independently."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return {n.name: n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}


INTEGER = {"QGemm", "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat"}


def _assert_labels_match_the_runtime(model: onnx.ModelProto, x: np.ndarray, **config) -> dict:
    candidate = Quantizer(model, x).quantize(validate(QuantizationConfig, config), kernels=True)
    result = candidate.result
    assert candidate.kernels is not None
    runs = dict(candidate.kernels.nodes)
    assert set(runs) == set(result.quantized)  # every quantized node found by name
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        seen = _optimized_op_types(candidate.model, Path(tmp))
    assert runs == {n: seen[n] if seen[n] in INTEGER else None for n in result.quantized}
    assert candidate.as_dict()["expected_kernels"] == runs
    for name, kernel in runs.items():
        kernel_labels = [
            lbl for lbl in result.labels if lbl.node == name and lbl.tensor == "kernel"
        ]
        assert bool(kernel_labels) == (kernel is None), (name, kernel, kernel_labels)
    return runs


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"default": {"data_in_width": 4, "weight_width": 4}},
        {"by_type": {"conv": {"data_out_width": 6}}},
        {"default": {"data_in_width": 12}},  # 16-bit activations: nothing fuses
    ],
    ids=["8bit", "4bit", "conv-data-out-6", "16bit-activations"],
)
def test_cnn_labels_agree_with_the_optimized_graph(config):
    model, _ = cnn_model()
    runs = _assert_labels_match_the_runtime(model, _images(), **config)
    if "data_in_width" not in config.get("default", {}) or config["default"]["data_in_width"] <= 8:
        # conv1 has no Q of its own: conv2's input Q, moved across the MaxPool, serves
        assert runs == {"conv1": "QLinearConv", "conv2": "QLinearConv", "fc": "QGemm"}


def test_digits_cnn_like_conv_relu_conv_fuses_and_says_so():
    runs = _assert_labels_match_the_runtime(_conv_relu_conv(), _images())
    assert runs == {"conv1": "QLinearConv", "conv2": "QLinearConv", "conv3": "QLinearConv",
                    "fc": "QGemm"}  # fmt: skip


@pytest.mark.parametrize(
    ("between", "first"),
    [
        ([], "QLinearMatMul"),
        (["Relu"], "QLinearMatMul"),
        (["Sigmoid"], "MatMulIntegerToFloat"),  # a float op: nothing requantizes mm1's output
    ],
)
def test_matmul_kernel_follows_the_next_layers_q(between, first):
    x = RNG.standard_normal((64, 16)).astype(np.float32)
    runs = _assert_labels_match_the_runtime(_matmul_chain(between), x)
    assert runs == {"mm1": first, "mm2": "MatMulIntegerToFloat"}


def test_mlp_labels_agree_with_the_optimized_graph():
    model, _ = mlp_model()
    x = RNG.standard_normal((64, 64)).astype(np.float32)
    runs = _assert_labels_match_the_runtime(model, x)
    assert runs == {"fc0": "QGemm", "fc1": "QGemm", "fc2": "QGemm"}


def test_agree_with_drops_labels_of_fused_nodes_and_explains_float_ones():
    labels = (
        HonestLabel("a", "kernel", None, None, CONV_NEEDS_OUTPUT_Q),
        HonestLabel("a", "weight", 6, "int8", "6-bit in int8"),
    )
    new_labels = agree_with(labels, {"a": "QLinearConv", "b": None}, {"a": "Conv", "b": "Gemm"})
    assert [(lbl.node, lbl.tensor) for lbl in new_labels] == [("a", "weight"), ("b", "kernel")]
    assert "float Gemm" in new_labels[1].reason
