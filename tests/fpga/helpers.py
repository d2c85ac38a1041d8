"""Tiny models built with onnx.helper (unnamed nodes, like other tools write them), quantized
by onnxopt's own pipeline, and the skip-or-fail rule for the fpga extra."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.optimizer.quantization.quantizer import Quantizer

OPSET = 21


def need_extra() -> None:
    """Skip without hls4ml/qonnx, except in CI (CI=true), where they must be installed."""
    missing = [m for m in ("hls4ml", "qonnx") if importlib.util.find_spec(m) is None]
    if missing:
        message = (
            f"the fpga extra is not installed ({', '.join(missing)}): pip install -e '.[fpga]'"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def plain_mlp(seed: int = 0, dims=(12, 10, 8, 4), relu_after=(1,)) -> onnx.ModelProto:
    """Gemm layers with unnamed nodes; a Relu only after the layers in ``relu_after``, so the
    other hidden activations are signed (stored as uint8 + zero point 128)."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(len(dims) - 1):
        w = (rng.standard_normal((dims[i + 1], dims[i])) * 0.4).astype(np.float32)
        b = (rng.standard_normal(dims[i + 1]) * 0.3).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(b, f"B{i}")]
        out = "y" if i == len(dims) - 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [out], transB=1))
        x = out
        if i in relu_after and out != "y":
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dims[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return model


def inputs(n: int, features: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, features)) * 2).astype(np.float32)


def quantize(model: onnx.ModelProto, x: np.ndarray, config: dict | None = None) -> onnx.ModelProto:
    """onnxopt's quantizer on ``model``, calibrated on ``x``."""
    candidate = Quantizer(model, x).quantize(QuantizationConfig.model_validate(config or {}))
    return candidate.model


def gemm_names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "Gemm"]


def mixed_config(names: list[str]) -> dict:
    """A different (data_in, weight, bias) width per layer, 2..8 bits."""
    widths = [(6, 4, 8), (3, 2, 6), (5, 7, 5), (4, 3, 8), (8, 5, 7)]
    by_name = {}
    for name, (a, w, b) in zip(names, widths * 4, strict=False):
        by_name[name] = {"data_in_width": a, "weight_width": w, "bias_width": b}
    return {"by_name": by_name}
