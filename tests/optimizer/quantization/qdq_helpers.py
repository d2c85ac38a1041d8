"""Tiny inline models, onnxruntime runners and an independent numpy fixed-point simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxopt.optimizer.quantization import quantize_fixed

OPSET = 21


def _model(nodes, inits, in_shape, out_shape, opset=OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def mlp_model(seed: int = 0, dims=(64, 32, 16, 10)) -> tuple[onnx.ModelProto, list[dict]]:
    """Gemm -> Relu -> Gemm (transB=0) -> Relu -> Gemm, dynamic batch; returns the layers."""
    rng = np.random.default_rng(seed)
    nodes, inits, layers, x = [], [], [], "x"
    for i in range(len(dims) - 1):
        trans_b = int(i != 1)
        w = (rng.standard_normal((dims[i + 1], dims[i])) * 0.3).astype(np.float32)
        b = (rng.standard_normal(dims[i + 1]) * 0.5).astype(np.float32)
        stored = w if trans_b else np.ascontiguousarray(w.T)
        inits += [numpy_helper.from_array(stored, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "y" if i == len(dims) - 2 else f"g{i}"
        nodes.append(
            helper.make_node("Gemm", [x, f"W{i}", f"b{i}"], [out], f"fc{i}", transB=trans_b)
        )
        layers.append({"name": f"fc{i}", "w": w, "b": b})
        x = out
        if out != "y":
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"], f"relu{i}"))
            x = f"r{i}"
    return _model(nodes, inits, ["N", dims[0]], ["N", dims[-1]]), layers


def cnn_model(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv -> Relu -> MaxPool -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.standard_normal((4, 1, 3, 3)) * 0.5,
        "b1": rng.standard_normal(4) * 0.2,
        "w2": rng.standard_normal((8, 4, 3, 3)) * 0.3,
        "b2": rng.standard_normal(8) * 0.2,
        "w3": rng.standard_normal((10, 8)) * 0.5,
        "b3": rng.standard_normal(10) * 0.2,
    }
    params = {k: v.astype(np.float32) for k, v in params.items()}
    inits = [numpy_helper.from_array(v, k) for k, v in params.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], "conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], "relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], "gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], "flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["y"], "fc", transB=1),
    ]
    return _model(nodes, inits, ["N", 1, 8, 8], ["N", 10]), params


def run(model: onnx.ModelProto, x: np.ndarray, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    """Run ``model`` on ``x`` with onnxruntime CPU at an optimization level."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def optimized_op_types(model: onnx.ModelProto, tmp_path: Path) -> list[str]:
    """The op types of the graph onnxruntime actually runs (ORT_ENABLE_EXTENDED)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def assert_valid(model: onnx.ModelProto) -> None:
    """The checker (full) and strict shape inference accept the model."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


def count_ops(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> number of nodes."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def fq(x, width, frac, signed=True, axis=None) -> np.ndarray:
    """The dequantized fixed-point value (float64)."""
    return quantize_fixed(x, width, frac, signed, axis=axis)[1]


def bias_at_accumulator(b, width, frac, acc_frac) -> np.ndarray:
    """Bias rounded to its own grid, then expressed at the accumulator scale (exact case)."""
    ints = quantize_fixed(b, width, frac, True)[0]
    return np.ldexp(np.ldexp(ints.astype(np.float64), np.subtract(acc_frac, frac)), -acc_frac)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
    """Plain NCHW convolution, stride 1, in float64."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = w.shape[2:]
    h, wd = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nchw,oc->nohw", x[:, :, i : i + h, j : j + wd], w[:, :, i, j])
    return out + b.reshape(1, -1, 1, 1)


def maxpool2(x: np.ndarray) -> np.ndarray:
    """2x2 max pooling, stride 2."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
