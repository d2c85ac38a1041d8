"""The QDQ pass on tiny Gemm / Conv / MatMul models: structure, numerics, fusion."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from qdq_helpers import (
    assert_valid,
    bias_at_accumulator,
    cnn_model,
    conv2d,
    count_ops,
    fq,
    maxpool2,
    mlp_model,
    optimized_op_types,
    run,
)

from onnxopt.config import validate
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.errors import ConfigError, RewriteError
from onnxopt.graph import run_pass
from onnxopt.optimizer.quantization import (
    BIT_WIDTHS_KEY,
    NodeQuantSpec,
    QDQPass,
    TensorSpec,
    frac_for_range,
    quantize_model,
)
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.runtime.kernels import kernel_facts

LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
F_IN, F_W, F_B = 4, 6, 10  # F_B <= F_IN + F_W: the bias is exact at the accumulator scale


def _mlp_specs(layers, act_width=8, weight_width=8, data_out=None):
    return {
        layer["name"]: NodeQuantSpec(
            weight=TensorSpec(weight_width, F_W),
            bias=TensorSpec(16, F_B),
            data_in=TensorSpec(act_width, F_IN),
            data_out=data_out,
        )
        for layer in layers
    }


def _simulate_mlp(x, layers, act_width=8, weight_width=8):
    """Independent float64 fixed-point simulation of the quantized MLP."""
    h = x.astype(np.float64)
    for i, layer in enumerate(layers):
        h = fq(h, act_width, F_IN, signed=i == 0)  # after a Relu the input is unsigned
        w = fq(layer["w"], weight_width, F_W)
        h = h @ w.T + bias_at_accumulator(layer["b"], 16, F_B, F_IN + F_W)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h


@pytest.mark.parametrize(("act_width", "weight_width"), [(8, 8), (4, 3)])
def test_mlp_matches_numpy_fixed_point_and_fuses_to_qgemm(act_width, weight_width, tmp_path):
    model, layers = mlp_model()
    result = quantize_model(model, _mlp_specs(layers, act_width, weight_width))
    assert_valid(result.model)
    clips = 3 if act_width < 8 else 0
    # per Gemm: Q (+Clip) + DQ on the input, DQ on the weight, DQ on the bias
    assert count_ops(result.model) == {
        "QuantizeLinear": 3,
        "DequantizeLinear": 9,
        "Gemm": 3,
        "Relu": 2,
        **({"Clip": clips} if clips else {}),
    }
    assert len(result.model.graph.node) == len(model.graph.node) + 12 + clips
    x = (np.random.default_rng(1).standard_normal((7, 64)) * 4).astype(np.float32)
    expected = _simulate_mlp(x, layers, act_width, weight_width)
    for level in LEVELS:
        np.testing.assert_allclose(run(result.model, x, level), expected, rtol=1e-6, atol=1e-6)
    ops = optimized_op_types(result.model, tmp_path)
    assert ops.count("QGemm") == 3 and "Gemm" not in ops
    kernels = kernel_facts(result.model, result.quantized).nodes
    assert kernels == {"fc0": "QGemm", "fc1": "QGemm", "fc2": "QGemm"}


def test_mlp_signedness_follows_the_graph():
    model, layers = mlp_model()
    quantized = quantize_model(model, _mlp_specs(layers)).model
    inits = {t.name: int(numpy_helper.to_array(t)) for t in quantized.graph.initializer
             if not t.dims}  # fmt: skip
    zero_points = {  # equal scalars are stored once, so read them through each input's Q node
        n.name: inits[n.input[2]] for n in quantized.graph.node if n.name.endswith("_in_Q")
    }
    # the graph input may be negative (zero point 128); Relu outputs are unsigned
    assert zero_points == {"fc0_in_Q": 128, "fc1_in_Q": 0, "fc2_in_Q": 0}


def test_quantizing_never_mutates_the_callers_model():
    model, layers = mlp_model()
    before = model.SerializeToString()
    quantize_model(model, _mlp_specs(layers))
    assert model.SerializeToString() == before
    quantizer = Quantizer(model)
    config = validate(QuantizationConfig, {"default": {"data_in_frac_width": 4}})
    first = quantizer.quantize(config).model.SerializeToString()
    assert quantizer.quantize(config).model.SerializeToString() == first  # base kept pristine
    assert model.SerializeToString() == before


def test_the_pass_works_in_place_on_the_model_it_is_given():
    model, layers = mlp_model()
    ir_model = ir.from_proto(model)
    result = QDQPass(_mlp_specs(layers))(ir_model)
    assert result.model is ir_model and result.modified
    assert sum(n.op_type == "QuantizeLinear" for n in ir_model.graph) >= 3


def test_bit_widths_metadata_and_float_weights_removed():
    model, layers = mlp_model()
    result = quantize_model(model, _mlp_specs(layers, act_width=5, weight_width=3))
    meta = {p.key: p.value for p in result.model.metadata_props}
    widths = json.loads(meta[BIT_WIDTHS_KEY])
    assert widths == dict(result.bit_widths)
    assert {widths[f"fc{i}_weight_quantized"] for i in range(3)} == {3}
    assert {widths[f"fc{i}_bias_quantized"] for i in range(3)} == {16}
    inits = {t.name: t for t in result.model.graph.initializer}
    assert inits["fc0_weight_quantized"].data_type == TensorProto.INT8
    assert inits["fc0_bias_quantized"].data_type == TensorProto.INT32
    assert not {"W0", "W1", "W2", "b0", "b1", "b2"} & set(inits)
    ints = numpy_helper.to_array(inits["fc0_weight_quantized"])
    assert ints.min() >= -4 and ints.max() <= 3  # 3-bit values in the int8 container


def test_honest_labels_name_widths_without_gain():
    model, layers = mlp_model()
    specs = _mlp_specs(layers, act_width=5, weight_width=3)
    specs["fc2"] = NodeQuantSpec(TensorSpec(12, 8), TensorSpec(16, 10), TensorSpec(12, 6))
    result = quantize_model(model, specs)
    by_key = {(label.node, label.tensor): label for label in result.labels}
    assert by_key["fc0", "weight"].container == "int8" and by_key["fc0", "weight"].width == 3
    assert "no storage or speed gain over 8-bit" in by_key["fc0", "data_in"].reason
    assert by_key["fc2", "data_in"].container == "uint16"  # after a Relu: unsigned
    assert "no integer Gemm kernel" in by_key["fc2", "kernel"].reason
    assert ("fc0", "kernel") not in by_key
    assert kernel_facts(result.model, result.quantized).nodes["fc2"] is None
    assert json.dumps(result.as_dict())  # JSON-ready for the CLI


def _cnn_specs():
    out = TensorSpec(8, 4)
    return {
        "conv1": NodeQuantSpec(
            weight=TensorSpec(8, granularity="per_channel"),
            bias=TensorSpec(16, 10),
            data_in=TensorSpec(8, 5),
            data_out=out,
        ),
        "conv2": NodeQuantSpec(TensorSpec(8, F_W), TensorSpec(16, F_B), TensorSpec(8, 4), out),
        "fc": NodeQuantSpec(TensorSpec(8, F_W), TensorSpec(16, F_B), TensorSpec(8, 5)),
        "pool1": NodeQuantSpec(TensorSpec(8, F_W), None, TensorSpec(8, 4)),
    }


def _simulate_cnn(x, p):
    wf1 = frac_for_range(np.abs(p["w1"]).max(axis=(1, 2, 3)), 8)  # per-channel "auto"
    h = fq(x, 8, 5)
    h = conv2d(h, fq(p["w1"], 8, wf1, axis=0), bias_at_accumulator(p["b1"], 16, 10, 5 + wf1), 1)
    h = maxpool2(fq(np.maximum(h, 0.0), 8, 4, signed=False))
    h = fq(h, 8, 4, signed=False)
    h = conv2d(h, fq(p["w2"], 8, F_W), bias_at_accumulator(p["b2"], 16, F_B, 4 + F_W), 1)
    h = fq(np.maximum(h, 0.0), 8, 4, signed=False).mean(axis=(2, 3))
    h = fq(h, 8, 5, signed=False)
    return h @ fq(p["w3"], 8, F_W).T + bias_at_accumulator(p["b3"], 16, F_B, 5 + F_W)


def test_cnn_matches_numpy_fixed_point_and_fuses_to_qlinearconv(tmp_path):
    model, params = cnn_model()
    result = quantize_model(model, _cnn_specs())
    assert_valid(result.model)
    assert result.quantized == ("conv1", "conv2", "fc")
    assert result.skipped == {
        "pool1": "op type 'MaxPool' is not quantized (supported: Conv, Gemm, MatMul, Gather)"
    }
    # 3 input Q/DQ + 2 output Q/DQ (after the Relus), 3 weight DQ, 3 bias DQ
    assert count_ops(result.model) == count_ops(model) | {
        "QuantizeLinear": 5,
        "DequantizeLinear": 11,
    }
    assert "conv1: data_out quantized after its Relu" in result.notes
    weight_dq = next(n for n in result.model.graph.node if n.name == "conv1_weight_DQ")
    assert helper.get_attribute_value(weight_dq.attribute[0]) == 0  # per-channel axis
    x = np.random.default_rng(2).uniform(-1.0, 3.0, (5, 1, 8, 8)).astype(np.float32)
    expected = _simulate_cnn(x, params)
    for level in LEVELS:
        np.testing.assert_allclose(run(result.model, x, level), expected, rtol=1e-6, atol=1e-6)
    ops = optimized_op_types(result.model, tmp_path)
    assert ops.count("QLinearConv") == 2 and ops.count("QGemm") == 1
    assert "Conv" not in ops and "Gemm" not in ops


def _matmul_model(w: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], "mm")],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[1]])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize(
    ("data_out", "kernel"),
    [
        (None, "MatMulIntegerToFloat"),
        (TensorSpec(8, 3), "QLinearMatMul"),
        (TensorSpec(5, 2), "QLinearMatMul"),
    ],
)
def test_matmul_with_output_requantization(data_out, kernel, tmp_path):
    w = (np.random.default_rng(3).standard_normal((16, 8)) * 0.5).astype(np.float32)
    spec = NodeQuantSpec(TensorSpec(8, F_W), None, TensorSpec(8, F_IN), data_out)
    result = quantize_model(_matmul_model(w), {"mm": spec})
    assert_valid(result.model)
    assert [o.name for o in result.model.graph.output] == ["y"]  # graph output name kept
    x = (np.random.default_rng(4).standard_normal((200, 16)) * 3).astype(np.float32)
    expected = fq(x, 8, F_IN) @ fq(w, 8, F_W)
    if data_out is not None:
        expected = fq(expected, data_out.width, data_out.frac)
    for level in LEVELS:
        np.testing.assert_array_equal(run(result.model, x, level), expected.astype(np.float32))
    assert kernel in optimized_op_types(result.model, tmp_path)
    assert kernel_facts(result.model, result.quantized).nodes == {"mm": kernel}


def test_unknown_node_names_list_the_closest_names():
    model, layers = mlp_model()
    specs = _mlp_specs(layers)
    specs["fc_1"] = specs.pop("fc1")
    with pytest.raises(ConfigError, match=r"unknown node 'fc_1', did you mean 'fc1'.*\?"):
        quantize_model(model, specs)


def test_unsupported_nodes_are_skipped_with_a_reason():
    model, layers = mlp_model()
    specs = {"relu0": _mlp_specs(layers)["fc0"]}
    result = quantize_model(model, specs)
    assert result.quantized == ()
    assert result.skipped == {
        "relu0": "op type 'Relu' is not quantized (supported: Conv, Gemm, MatMul, Gather)"
    }
    assert count_ops(result.model) == count_ops(model)


def test_non_constant_weight_is_skipped():
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], "mm")],
        "mm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("x", "w")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    spec = NodeQuantSpec(TensorSpec(8, 4), None, TensorSpec(8, 4))
    assert quantize_model(model, {"mm": spec}).skipped == {
        "mm": "weight input is not a constant initializer"
    }


def test_per_channel_frac_count_must_match_the_weight():
    model, layers = mlp_model()
    spec = NodeQuantSpec(
        TensorSpec(8, (4, 5), granularity="per_channel"), TensorSpec(16, 10), TensorSpec(8, 4)
    )
    with pytest.raises(ConfigError, match="2 fractions for 32 output channels"):
        quantize_model(model, {"fc0": spec})


def test_bias_overflowing_int32_is_a_rewrite_error():
    model, layers = mlp_model()
    spec = NodeQuantSpec(TensorSpec(8, 30), TensorSpec(16, 0), TensorSpec(8, 30))
    with pytest.raises(RewriteError, match="bias overflows int32"):
        quantize_model(model, {"fc0": spec})


def test_old_opsets_are_raised_with_a_note():
    model, layers = mlp_model()
    old = onnx.version_converter.convert_version(model, 17)
    result = quantize_model(old, _mlp_specs(layers))
    assert result.opset == 21 and "opset raised from 17 to 21" in result.notes[0]
    assert_valid(result.model)


def test_consumers_of_one_value_share_one_qdq_chain():
    w = np.eye(16, 8, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["a"], "mm_a"),
            helper.make_node("MatMul", ["x", "w"], ["b"], "mm_b"),
            helper.make_node("Add", ["a", "b"], ["y"], "add"),
        ],
        "shared",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    spec = NodeQuantSpec(TensorSpec(8, F_W), None, TensorSpec(8, F_IN))
    result = quantize_model(model, {"mm_a": spec, "mm_b": spec})
    assert_valid(result.model)
    # one Q/DQ on x shared by both MatMuls, one weight DQ each; "w" is gone
    assert count_ops(result.model) == {
        "QuantizeLinear": 1,
        "DequantizeLinear": 3,
        "MatMul": 2,
        "Add": 1,
    }
    assert "w" not in {t.name for t in result.model.graph.initializer}
    x = np.linspace(-9, 9, 32, dtype=np.float32).reshape(2, 16)
    np.testing.assert_array_equal(
        run(result.model, x), (2 * fq(x, 8, F_IN)[:, :8]).astype(np.float32)
    )


def test_pass_refuses_models_whose_opset_is_too_low_for_the_containers():
    model, layers = mlp_model()
    old = ir.from_proto(onnx.version_converter.convert_version(model, 17))
    specs = {"fc0": NodeQuantSpec(TensorSpec(8, 6), None, TensorSpec(12, 6))}
    with pytest.raises(RewriteError, match="need opset >= 21, the model has 17"):
        run_pass(QDQPass(specs), old)


def test_unknown_storage_is_a_config_error():
    model, layers = mlp_model()
    with pytest.raises(ConfigError, match="did you mean 'packed'"):
        quantize_model(model, _mlp_specs(layers), storage="pack")


def _simulate_mlp_with_outputs(x, layers, f_out):
    h = x.astype(np.float64)
    for i, layer in enumerate(layers):
        h = fq(h, 8, F_IN, signed=i == 0)
        h = h @ fq(layer["w"], 8, F_W).T + bias_at_accumulator(layer["b"], 16, F_B, F_IN + F_W)
        last = i == len(layers) - 1
        h = fq(h if last else np.maximum(h, 0.0), 8, f_out, signed=last)
    return h


def test_data_out_feeding_an_equal_data_in_is_not_requantized(tmp_path):
    model, layers = mlp_model()
    result = quantize_model(model, _mlp_specs(layers, data_out=TensorSpec(8, F_IN)))
    assert_valid(result.model)
    # input chain of fc0, then one output chain per layer reused as the next input
    assert count_ops(result.model) == {
        "QuantizeLinear": 4,
        "DequantizeLinear": 10,
        "Gemm": 3,
        "Relu": 2,
    }
    x = (np.random.default_rng(7).standard_normal((6, 64)) * 4).astype(np.float32)
    expected = _simulate_mlp_with_outputs(x, layers, F_IN)
    for level in LEVELS:
        np.testing.assert_array_equal(run(result.model, x, level), expected.astype(np.float32))
    assert optimized_op_types(result.model, tmp_path).count("QGemm") == 3


def test_a_reader_with_another_format_quantizes_the_float_itself(tmp_path):
    # A hidden data_out (frac F_IN - 1) read by a data_in of frac F_IN would make
    # Q1->DQ1->Q2->DQ2, which onnxruntime merges (ORT_ENABLE_BASIC and up) into one pair that
    # is neither format. Each reader quantizes the float instead; the unread data_outs go.
    model, layers = mlp_model()
    result = quantize_model(model, _mlp_specs(layers, data_out=TensorSpec(8, F_IN - 1)))
    assert_valid(result.model)
    assert count_ops(result.model)["QuantizeLinear"] == 4  # 3 data_in + the last data_out
    assert sum("instead of requantizing its data_out" in note for note in result.notes) == 2
    assert sum("data_out dropped" in note for note in result.notes) == 2
    x = (np.random.default_rng(7).standard_normal((500, 64)) * 4).astype(np.float32)
    h = x.astype(np.float64)
    for i, layer in enumerate(layers):
        h = fq(h, 8, F_IN, signed=i == 0)
        h = h @ fq(layer["w"], 8, F_W).T + bias_at_accumulator(layer["b"], 16, F_B, F_IN + F_W)
        h = np.maximum(h, 0.0) if i < len(layers) - 1 else fq(h, 8, F_IN - 1)
    for level in [*LEVELS, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC]:
        np.testing.assert_array_equal(run(result.model, x, level), h.astype(np.float32))
    assert optimized_op_types(result.model, tmp_path).count("QGemm") == 3


@pytest.mark.parametrize("between", ["Identity", "Dropout"])
def test_a_data_out_behind_identity_ops_is_not_requantized(between):
    rng = np.random.default_rng(0)
    w0, w1 = (rng.standard_normal(s).astype(np.float32) * 0.3 for s in ((16, 32), (32, 10)))
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["h"], "fc0"),
        helper.make_node("Relu", ["h"], ["r"], "relu"),
        helper.make_node(between, ["r"], ["f"], "mid"),
        helper.make_node("MatMul", ["f", "w1"], ["y"], "fc1"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    specs = {
        "fc0": NodeQuantSpec(TensorSpec(8, 6), None, TensorSpec(8, 4), TensorSpec(8, 3)),
        "fc1": NodeQuantSpec(TensorSpec(8, 6), None, TensorSpec(8, 5)),
    }
    result = quantize_model(model, specs)
    assert_valid(result.model)
    x = (rng.standard_normal((1000, 16)) * 3).astype(np.float32)
    h = np.maximum(fq(x, 8, 4) @ fq(w0, 8, 6), 0)
    expected = (fq(h, 8, 5, signed=False) @ fq(w1, 8, 6)).astype(np.float32)
    for level in LEVELS:
        np.testing.assert_array_equal(run(result.model, x, level), expected)


@pytest.mark.parametrize("op", ["mm", "conv1"])
def test_narrow_int8_inputs_clip_on_the_float_side_and_still_fuse(op, tmp_path):
    w = (np.random.default_rng(8).standard_normal((16, 8)) * 0.5).astype(np.float32)
    model = _matmul_model(w) if op == "mm" else cnn_model()[0]
    data_in = TensorSpec(4, 2, container="int8")
    spec = NodeQuantSpec(TensorSpec(8, F_W), TensorSpec(16, F_B), data_in, TensorSpec(8, 3))
    result = quantize_model(model, {op: spec})
    assert_valid(result.model)
    # Clip -> Q -> DQ: a Clip on int8 codes would stop the MatMul/Conv fusion
    assert [n.op_type for n in result.model.graph.node[:3]] == [
        "Clip",
        "QuantizeLinear",
        "DequantizeLinear",
    ]
    kernel = {"mm": "QLinearMatMul", "conv1": "QLinearConv"}[op]
    assert kernel in optimized_op_types(result.model, tmp_path)
    assert kernel_facts(result.model, result.quantized).nodes == {op: kernel}
