"""Dynamic activations (DynamicQuantizeLinear -> MatMulInteger) and Gather tables (weight-only,
8 and 4 bits), against a numpy reference that imports nothing from onnxopt.

The reference follows the ONNX spec of DynamicQuantizeLinear (uint8, range widened to hold 0,
zero point rounded half to even) and fixed-point weights ``clamp(rint(w * 2**f)) * 2**-f``.
The models have unnamed nodes (named by the foreign-model repairs) and an int64 ids input.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.config.search import SearchQuantization
from onnxopt.exporters.repairs import name_nodes
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.optimizer.search.space import SearchSpace

V, D, N = 40, 16, 8  # vocabulary, embedding width, output columns


def _fixed(w: np.ndarray, width: int, frac: np.ndarray | int) -> np.ndarray:
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    return np.clip(np.rint(w * np.ldexp(1.0, frac)), lo, hi) * np.ldexp(1.0, -np.asarray(frac))


def _frac(max_abs: np.ndarray, width: int) -> np.ndarray:
    """Largest fraction whose grid still holds ``max_abs`` (the issue's "auto")."""
    return np.floor(np.log2((2 ** (width - 1) - 1) / max_abs)).astype(int)


def _dynamic(x: np.ndarray) -> np.ndarray:
    """DynamicQuantizeLinear then dequantize, per the ONNX spec (float32 arithmetic)."""
    x = x.astype(np.float32)
    lo, hi = min(np.float32(0), x.min()), max(np.float32(0), x.max())
    scale = np.float32((hi - lo) / np.float32(255))
    zp = np.clip(np.rint(-lo / scale), 0, 255)
    q = np.clip(np.rint(x / scale) + zp, 0, 255)
    return ((q - zp) * scale).astype(np.float64)


def _model(rng) -> onnx.ModelProto:
    """ids (int64) -> Gather(table) -> MatMul(W) -> Relu -> Reshape -> Gemm(G, b, transB)."""
    inits = {
        "E": rng.normal(0, 1, (V, D)), "W": rng.normal(0, 0.3, (D, N)) * np.linspace(0.2, 2, N),
        "G": rng.normal(0, 0.3, (5, N)), "b": rng.normal(0, 0.1, 5),
    }  # fmt: skip
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["e"]),
        helper.make_node("MatMul", ["e", "W"], ["m"]),
        helper.make_node("Relu", ["m"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["r2"]),
        helper.make_node("Gemm", ["r2", "G", "b"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
        + [numpy_helper.from_array(np.array([-1, N], np.int64), "shape")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    named, _ = name_nodes(model, "test")
    return named


def _reference(model: onnx.ModelProto, ids, *, table_width, granularity, dynamic=True):
    w = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    per_channel = granularity == "per_channel"

    def weight(array, axis, width=8):
        max_abs = np.abs(array).max(axis=1 - axis) if per_channel else np.abs(array).max()
        frac = _frac(max_abs, width)
        return _fixed(array, width, frac if not per_channel or axis == 1 else frac[:, None])

    act = _dynamic if dynamic else (lambda x: x)
    e = weight(w["E"], 0, table_width)[ids]  # a table has one scale per row (token)
    m = np.maximum(act(e.reshape(-1, D)) @ weight(w["W"], 1), 0)
    return act(m) @ weight(w["G"], 0).T + w["b"]


def _run(model: onnx.ModelProto, ids, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options)
    return session.run(None, {"ids": ids})[0]


def _config(granularity: str, table_width: int, storage: str = "packed") -> QuantizationConfig:
    return QuantizationConfig.model_validate({
        "target_cpu": "any", "storage": storage,
        "default": {"activation": "dynamic", "weight_granularity": granularity},
        "by_type": {"gather": {"weight_width": table_width}},
    })  # fmt: skip


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("table_width", [8, 4])
def test_dynamic_and_gather_match_numpy(granularity, table_width):
    rng = np.random.default_rng(1)
    model = _model(rng)
    ids = rng.integers(0, V, (6, 3)).astype(np.int64)
    candidate = Quantizer(model).quantize(_config(granularity, table_width), kernels=True)
    quantized = candidate.model
    onnx.checker.check_model(quantized, full_check=True)
    ops = [n.op_type for n in quantized.graph.node]
    assert ops.count("DynamicQuantizeLinear") == 2 and ops.count("MatMulInteger") == 2
    assert ops.count("MatMul") == 0 and ops.count("Gemm") == 0
    assert set(candidate.result.quantized) == {"Gather_0", "MatMul_1", "Gemm_4"}
    # onnxruntime fuses the chains into its dynamic kernel, under the original names
    assert candidate.kernels.nodes == {"MatMul_1": "DynamicQuantizeMatMul",
                                       "Gemm_4": "DynamicQuantizeMatMul", "Gather_0": None}
    expected = _reference(model, ids, table_width=table_width, granularity=granularity)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_ENABLE_ALL):  # fmt: skip
        got = _run(quantized, ids, level)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    float_out = _run(model, ids)
    assert not np.allclose(float_out, expected, atol=1e-3)  # the reference is not the float


def test_stored_bit_widths_and_size():
    model = _model(np.random.default_rng(2))
    inits = {i.name: i for i in model.graph.initializer}
    sizes = {}
    for width in (8, 4):
        quantized = Quantizer(model).quantize(_config("per_tensor", width)).model
        stored = {i.name: i for i in quantized.graph.initializer}
        table = stored["Gather_0_table_quantized"]
        assert table.data_type == (TensorProto.INT8 if width == 8 else TensorProto.INT4)
        assert stored["MatMul_1_weight_quantized"].data_type == TensorProto.UINT8  # zp 128
        assert "E" not in stored and "W" not in stored and "G" not in stored
        sizes[width] = len(table.SerializeToString())
        meta = {p.key: p.value for p in quantized.metadata_props}
        assert f'"Gather_0_table_quantized": {width}' in meta["onnxopt.bit_widths"]
    float_table = len(inits["E"].SerializeToString())
    assert sizes[8] < float_table / 3.5 and sizes[4] < sizes[8] / 1.9


def test_static_gather_weight_only_and_static_rest():
    """Gather quantization also goes with static activations (data_in calibrated)."""
    rng = np.random.default_rng(3)
    model = _model(rng)
    ids = rng.integers(0, V, (6, 3)).astype(np.int64)
    config = QuantizationConfig.model_validate(
        {"target_cpu": "any", "by_type": {"gather": {"weight_width": 8}},
         "default": {"data_in_frac_width": 3}}
    )  # fmt: skip
    quantized = Quantizer(model).quantize(config).model
    ops = [n.op_type for n in quantized.graph.node]
    assert "DynamicQuantizeLinear" not in ops and ops.count("QuantizeLinear") == 2
    assert _run(quantized, ids).shape == (18, 5)


def test_gather_not_quantized_without_an_entry():
    model = _model(np.random.default_rng(4))
    config = QuantizationConfig.model_validate({"default": {"activation": "dynamic"}})
    candidate = Quantizer(model).quantize(config)
    assert "Gather_0" not in candidate.result.quantized
    assert "[by_type.gather]" in candidate.float_nodes["Gather_0"]


def test_dynamic_conv_is_skipped_with_a_reason():
    rng = np.random.default_rng(5)
    w = numpy_helper.from_array(rng.normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], "conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3, 3])], [w],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    config = QuantizationConfig.model_validate(
        {"default": {"activation": "dynamic", "data_in_frac_width": 4}}
    )
    candidate = Quantizer(model).quantize(config)
    reason = "dynamic activations apply to Gemm, MatMul only, not Conv"
    assert candidate.result.skipped == {"conv": reason}


def test_search_space_picks_up_the_new_keys():
    quant = SearchQuantization.model_validate({
        "storage": "packed",
        "by_type": {"linear": {"activation": ["static", "dynamic"],
                               "weight_granularity": ["per_tensor", "per_channel"]},
                    "gather": {"weight_width": [8, 4]}},
    })  # fmt: skip
    from onnxopt.config.search import Search

    space = SearchSpace.build(Search(quantization=quant))
    dims = {d.name: d.choices for d in space.dimensions}
    assert dims == {
        "q.by_type.linear.activation": ("static", "dynamic"),
        "q.by_type.linear.weight_granularity": ("per_tensor", "per_channel"),
        "q.by_type.gather.weight_width": (8, 4),
    }
    point = space.decode({"q.by_type.linear.activation": "dynamic",
                          "q.by_type.linear.weight_granularity": "per_channel",
                          "q.by_type.gather.weight_width": 4})  # fmt: skip
    config = space.quantization(point)
    layer = config.for_node("mm", "MatMul")
    assert (layer.activation, layer.weight_granularity) == ("dynamic", "per_channel")
    assert config.for_node("emb", "Gather").weight_width == 4


def test_mse_fraction_golden_cases():
    from onnxopt.optimizer.quantization.fixed_point import frac_for_mse

    # 4-bit signed, max 1.0: the range fraction is 2 (steps of 1/4, 7/4 >= 1). One finer
    # (1/8) saturates 1.0 to 7/8 (error 1/64) but puts 0.35 at 3/8 (error 1/1600) instead
    # of 1/4 (error 1/100): with ten of them finer wins, with one it does not.
    many = np.array([1.0] + [0.35] * 10)
    few = np.array([1.0, 0.35])
    assert frac_for_mse(many, 4) == 3 and frac_for_mse(few, 4) == 2
    padded = np.stack([many, np.r_[few, np.zeros(9)]], axis=1)  # channels along axis 1
    assert frac_for_mse(padded, 4, axis=1).tolist() == [3, 2]
    assert frac_for_mse(np.zeros(4), 4) == 3  # all zero: the range fraction (width - 1)
