"""Tiny classifier models built inline, and the numpy references they are checked against."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
FEATURES = 16
CLASSES = 5


def build_gemm(
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    softmax: bool = False,
    batch: str | int | None = "N",
    elem: int = TensorProto.FLOAT,
) -> onnx.ModelProto:
    """``logits = x @ weight + bias`` (optionally followed by Softmax) as an ONNX model."""
    features, classes = weight.shape
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    inits = [
        numpy_helper.from_array(weight.astype(dtype), "W"),
        numpy_helper.from_array(bias.astype(dtype), "b"),
    ]
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["logits" if not softmax else "z"])]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["probs"], axis=1))
    out = "probs" if softmax else "logits"
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("x", elem, [batch, features])],
        [helper.make_tensor_value_info(out, elem, [batch, classes])],
        inits,
    )
    return make_model(graph)


def build_cnn_like(weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """Image input (N, 1, 8, 8) -> Flatten -> Gemm, as a CNN head would see digits."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
        ],
        "cnn_like",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", weight.shape[1]])],
        [
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    return make_model(graph)


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """A checked model at the test opset."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def numpy_logits(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The independent reference: float64 ``x @ W + b``."""
    return x.astype(np.float64) @ weight.astype(np.float64) + bias.astype(np.float64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float64 (via scipy, independent of the code under test)."""
    from scipy.special import softmax as sp_softmax

    return sp_softmax(np.asarray(logits, dtype=np.float64), axis=1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def gemm_weights(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    weight = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    bias = rng.normal(size=CLASSES).astype(np.float32)
    return weight, bias


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(300, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=300).astype(np.int64)
    return x, y


@pytest.fixture
def gemm_builder() -> Callable[..., onnx.ModelProto]:
    return build_gemm


@pytest.fixture
def cnn_builder() -> Callable[..., onnx.ModelProto]:
    return build_cnn_like


@pytest.fixture
def reference() -> tuple[Callable[..., np.ndarray], Callable[..., np.ndarray]]:
    """(numpy_logits, softmax) for independent expected values."""
    return numpy_logits, softmax
