"""Quantized models for the runtime tests: MLPs built with onnx.helper, quantized by onnxopt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config import validate
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.optimizer.quantization.quantizer import Quantizer


def mlp(widths: list[int], seed: int = 0) -> onnx.ModelProto:
    """Gemm -> Relu -> ... -> Gemm with random weights; nodes named fc0, fc1, ..."""
    rng = np.random.default_rng(seed)
    nodes, inits, value = [], [], "x"
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        w = (rng.normal(0, 1 / np.sqrt(fan_in), (fan_out, fan_in))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, fan_out).astype(np.float32), f"b{i}")]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [value, f"w{i}", f"b{i}"], [out], f"fc{i}", transB=1))
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], f"relu{i}"))
            out = f"r{i}"
        value = out
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
        [helper.make_tensor_value_info(value, TensorProto.FLOAT, ["N", widths[-1]])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def quantized(model: onnx.ModelProto, x: np.ndarray, path: Path, **config) -> Path:
    candidate = Quantizer(model, x).quantize(validate(QuantizationConfig, config))
    onnx.save(candidate.model, path)
    return path


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return np.random.default_rng(1).normal(0, 1, (300, 64)).astype(np.float32)
