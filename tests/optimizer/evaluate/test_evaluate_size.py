"""Size on disk (with external data) and parameter count / bit width, against hand counts."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.errors import ModelLoadError
from onnxopt.optimizer.evaluate import parameter_stats, size_on_disk
from onnxopt.optimizer.evaluate.size import load_graph
from onnxopt.optimizer.quantization.metadata import BIT_WIDTHS_KEY
from onnxopt.runtime.ort import make_session


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def _mixed_model() -> onnx.ModelProto:
    """int8 weight [64,16] + DequantizeLinear, then a float32 Gemm [16,10] + bias [10].

    Not parameters: DQ scale (float) and zero point (int8), the int64 Reshape shape, the
    Clip bounds and an initializer no node consumes.
    """
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.integers(-128, 128, (64, 16)).astype(np.int8), "wq"),
        numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(np.array([-1, 16], np.int64), "shape"),
        numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6.0, np.float32), "hi"),
        numpy_helper.from_array(rng.normal(size=(16, 10)).astype(np.float32), "W2"),
        numpy_helper.from_array(rng.normal(size=10).astype(np.float32), "b2"),
        numpy_helper.from_array(np.ones(100, np.float32), "unused"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "scale", "zp"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Reshape", ["h", "shape"], ["h2"]),
        helper.make_node("Clip", ["h2", "lo", "hi"], ["h3"]),
        helper.make_node("Gemm", ["h3", "W2", "b2"], ["y"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )


# Hand count: wq 64*16 = 1024 elements at 8 bits; W2 16*10 = 160 and b2 10 at 32 bits.
PARAMS = 1024 + 160 + 10
BITS = 1024 * 8 + 170 * 32  # 13632


def test_mixed_int8_and_float32_parameters():
    stats = parameter_stats(_mixed_model())
    assert stats.parameters == PARAMS == 1194
    assert stats.average_bitwidth == pytest.approx(BITS / PARAMS)  # 11.417...
    assert stats.theoretical_size_bytes == BITS / 8 == 1704
    assert stats.memory_density == pytest.approx(32 / (BITS / PARAMS))
    rows = {t.name: (t.dtype, t.elements, t.bits, t.source) for t in stats.tensors}
    assert rows == {
        "wq": ("int8", 1024, 8, "initializer"),
        "W2": ("float32", 160, 32, "initializer"),
        "b2": ("float32", 10, 32, "initializer"),
    }
    make_session(_mixed_model())  # the graph is one onnxruntime runs


def test_metadata_overrides_effective_bits():
    model = _mixed_model()
    helper.set_model_props(model, {BIT_WIDTHS_KEY: json.dumps({"wq": 3, "b2": 16})})
    stats = parameter_stats(model)
    bits = 1024 * 3 + 160 * 32 + 10 * 16  # 8352
    assert stats.average_bitwidth == pytest.approx(bits / PARAMS)
    assert stats.theoretical_size_bytes == bits / 8
    wq = next(t for t in stats.tensors if t.name == "wq")
    assert (wq.bits, wq.container_bits) == (3, 8)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"wq": "3"}), "positive integer bit widths"),
        (json.dumps({"wq": 0}), "positive integer bit widths"),
        (json.dumps({"wq": 9}), "gives 'wq' 9 bits but it is stored in 8-bit"),
        (json.dumps({"scale": 4}), "names 'scale', which are not parameters"),
    ],
)
def test_bad_bit_width_metadata(value, message):
    model = _mixed_model()
    helper.set_model_props(model, {BIT_WIDTHS_KEY: value})
    with pytest.raises(ModelLoadError, match=message):
        parameter_stats(model)


def test_constant_node_weights_count_like_initializers():
    def const(name, array):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array))

    int4 = helper.make_tensor("q", TensorProto.INT4, [3, 2], [1, -2, 3, -4, 5, -6])
    nodes = [
        const("w", np.ones((4, 3), np.float32)),
        const("lo", np.array(0.0, np.float32)),
        const("shape", np.array([-1, 2], np.int64)),
        const("s", np.array(0.5, np.float32)),
        helper.make_node("Constant", [], ["q"], value=int4),
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Clip", ["h", "lo"], ["h2"]),
        helper.make_node("DequantizeLinear", ["q", "s"], ["wq"]),
        helper.make_node("MatMul", ["h2", "wq"], ["h3"]),
        helper.make_node("Reshape", ["h3", "shape"], ["y"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    stats = parameter_stats(model)
    # w: 12 float32 elements; q: 6 int4 elements. lo, s (float) and shape (int64) are not.
    assert {t.name: (t.elements, t.bits, t.source) for t in stats.tensors} == {
        "w": (12, 32, "constant"),
        "q": (6, 4, "constant"),
    }
    assert stats.parameters == 18
    assert stats.average_bitwidth == pytest.approx((12 * 32 + 6 * 4) / 18)
    make_session(model)


def test_model_without_parameters_is_refused():
    model = _model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    with pytest.raises(ModelLoadError, match="no parameters"):
        parameter_stats(model)


def test_size_of_single_file_model(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(_mixed_model(), path)
    assert size_on_disk(path) == os.path.getsize(path)


def test_size_includes_external_data_once(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save_model(
        _mixed_model(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    data_file = tmp_path / "weights.bin"
    assert data_file.stat().st_size > 1024
    assert size_on_disk(path) == os.path.getsize(path) + os.path.getsize(data_file)
    # Counting never needs the tensor bytes: dims are in the graph.
    assert parameter_stats(load_graph(path)).parameters == PARAMS
    data_file.unlink()
    with pytest.raises(ModelLoadError, match="'weights.bin', which does not exist"):
        size_on_disk(path)


def test_external_files_outside_the_model_directory_do_not_count(tmp_path):
    model = _mixed_model()
    weight = next(t for t in model.graph.initializer if t.name == "W2")
    (tmp_path / "outside.bin").write_bytes(
        weight.raw_data or numpy_helper.to_array(weight).tobytes()
    )
    weight.ClearField("float_data")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "../outside.bin"
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "m.onnx"
    path.write_bytes(model.SerializeToString())
    assert size_on_disk(path) == os.path.getsize(path)


def test_unreadable_model_files(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        size_on_disk(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe definitely not protobuf")
    with pytest.raises(ModelLoadError, match="bad.onnx is not an ONNX model"):
        size_on_disk(bad)
