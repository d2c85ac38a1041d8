"""Sessions: fixed threading, onnxruntime failures as one-line errors, classifier input/output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, parser

from onnxopt.errors import DataError, EvaluationError, ModelLoadError, UsageError
from onnxopt.optimizer.evaluate import predict_scores
from onnxopt.runtime.io import Feeds, model_io
from onnxopt.runtime.ort import OrtBackend, make_session

load_session = OrtBackend().load


def _parse(text: str) -> onnx.ModelProto:
    return parser.parse_model(text)


TWO_INPUTS = """<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 4] a, float[N, 4] b) => (float[N, 4] y) { y = Add(a, b) }"""

TWO_OUTPUTS = """<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 4] x) => (float[N, 4] feat, float[N, 3] logits) {
  feat = Relu(x)
  w = Constant<value = float[4, 3] {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1}>()
  logits = MatMul(feat, w)
}"""


def test_session_from_proto_and_path_pins_threads(tmp_path, gemm_builder, gemm_weights):
    model = gemm_builder(*gemm_weights)
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path)
    for source in (model, path, str(path)):
        session = make_session(source, threads=2, optimization="basic")
        options = session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.inter_op_num_threads == 1
        assert options.execution_mode.name == "ORT_SEQUENTIAL"
        assert options.graph_optimization_level.name == "ORT_ENABLE_BASIC"
        assert session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # invalid graph: 'zz' is produced by nothing
        ("g (float[N, 4] x) => (float[N, 4] y) { y = Add(x, zz) }", "INVALID_ARGUMENT"),
        # an op no provider implements
        ("g (float[N, 4] x) => (float[N, 4] y) { y = foo.bar.Mystery(x) }", "not a registered"),
        # a type the CPU kernel lacks
        ("g (int16[N, 4] x) => (int16[N, 4] y) { y = Relu(x) }", "NOT_IMPLEMENTED"),
    ],
)
def test_onnxruntime_refusal_is_one_line_evaluation_error(text, expected):
    header = '<ir_version: 10, opset_import: ["" : 21, "foo.bar" : 1]>\n'
    with pytest.raises(EvaluationError) as info:
        make_session(_parse(header + text))
    message = str(info.value)
    assert message.startswith("onnxruntime could not load the model: ")
    assert expected in message
    assert "\n" not in message and "[ONNXRuntimeError]" not in message
    assert info.value.exit_code == 1


def test_qdq_at_opset_28_is_a_model_load_error_with_the_fix():
    text = """<ir_version: 11, opset_import: ["" : 28]>
g (float[N, 4] x) => (float[N, 4] y) {
  s = Constant<value = float {0.5}>()
  z = Constant<value = uint8 {0}>()
  q = QuantizeLinear(x, s, z)
  y = DequantizeLinear(q, s, z)
}"""
    with pytest.raises(ModelLoadError) as info:
        make_session(_parse(text))
    message = str(info.value)
    assert "\n" not in message and "QuantizeLinear(28)" in message
    assert "--opset 21" in message


def test_run_failure_is_evaluation_error():
    model = _parse(
        '<ir_version: 10, opset_import: ["" : 21]>\n'
        "g (float[N, 4] x) => (float[N, 9] y) {\n"
        "  s = Constant<value = int64[2] {3, 3}>()\n  y = Reshape(x, s)\n}"
    )
    session = load_session(model)
    io = model_io(session)
    with pytest.raises(EvaluationError, match="could not run the model: FAIL: .*Reshape") as info:
        predict_scores(session, io, np.zeros((2, 4), np.float32))
    assert "\n" not in str(info.value)


def test_missing_file_garbage_file_and_bad_options(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        make_session(tmp_path / "nope.onnx")
    assert info.value.exit_code == 2
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(EvaluationError, match="could not load garbage.onnx: INVALID_PROTOBUF"):
        make_session(garbage)
    model = _parse(TWO_INPUTS)
    with pytest.raises(UsageError, match="did you mean 'all'"):
        make_session(model, optimization="al")
    with pytest.raises(UsageError, match="threads must be an integer in 1..1024"):
        make_session(model, threads=0)


def test_model_io_symbolic_batch(gemm_builder, gemm_weights):
    io = model_io(load_session(gemm_builder(*gemm_weights)))
    assert (io.input_name, io.inputs[0].shape, io.output_name) == ("x", ("N", 16), "logits")
    assert io.inputs[0].dtype == np.float32 and io.output_width == 5 and io.fixed_batch is None
    unnamed = model_io(load_session(gemm_builder(*gemm_weights, batch=None)))
    assert unnamed.inputs[0].shape[1:] == (16,) and unnamed.fixed_batch is None
    fixed = model_io(load_session(gemm_builder(*gemm_weights, batch=4)))
    assert fixed.inputs[0].shape == (4, 16) and fixed.fixed_batch == 4


def test_several_inputs_are_fed_by_name_or_fixed():
    session = load_session(_parse(TWO_INPUTS))
    io = model_io(session)
    x = np.ones((3, 4), np.float32)
    with pytest.raises(DataError, match=r"2 inputs to feed \('a', 'b'\).*one array per input"):
        Feeds(io.inputs, x)
    feeds = Feeds(io.inputs, {"a": x, "b": 2 * x})
    assert set(feeds.batch(0, 2)) == {"a", "b"}
    fixed = Feeds(io.inputs, x, {"b": [5.0, 6.0, 7.0, 8.0]})
    np.testing.assert_array_equal(fixed.batch(0, 3)["b"], [[5.0, 6.0, 7.0, 8.0]] * 3)
    with pytest.raises(DataError, match="no array for model input 'b'.*x_b.*model.inputs.b"):
        Feeds(io.inputs, {"a": x})
    with pytest.raises(UsageError, match="'c', which is not a model input"):
        Feeds(io.inputs, x, {"c": 1.0})


def test_several_outputs_picked_by_name_or_class_count():
    session = load_session(_parse(TWO_OUTPUTS))
    with pytest.raises(UsageError, match=r"2 outputs \('feat' \['N', 4\], 'logits'.*--output-name"):
        model_io(session)
    assert model_io(session, num_classes=3).output_name == "logits"
    assert model_io(session, output_name="feat").output_name == "feat"
    with pytest.raises(UsageError, match="0 of the model's outputs"):
        model_io(session, num_classes=7)
    with pytest.raises(UsageError, match="did you mean 'logits'"):
        model_io(session, output_name="logit")


def test_an_input_type_onnxopt_cannot_feed_is_a_data_error():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "str_in",
        [helper.make_tensor_value_info("x", TensorProto.STRING, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.STRING, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    with pytest.raises(DataError, match=r"input 'x' has type tensor\(string\)"):
        model_io(load_session(model))


def test_fused_dequantize_matmul_keeps_float_activations(rng):
    # onnxruntime rewrites DequantizeLinear + MatMul into MatMulNBits; by default that kernel
    # quantizes x to int8 (errors ~1e-2 here). The session must keep the graph's numerics.
    wq = rng.integers(-7, 8, size=(16, 5)).astype(np.int8)
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"]),
            helper.make_node("MatMul", ["x", "w"], ["y"]),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [
            onnx.numpy_helper.from_array(wq, "wq"),
            onnx.numpy_helper.from_array(np.array(0.1, np.float32), "scale"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    x = rng.normal(size=(64, 16)).astype(np.float32)
    expected = x.astype(np.float64) @ (wq.astype(np.float64) * np.float32(0.1))
    for level in ("disable", "all"):
        (out,) = make_session(model, optimization=level).run(None, {"x": x})
        np.testing.assert_allclose(out, expected, atol=1e-5)
