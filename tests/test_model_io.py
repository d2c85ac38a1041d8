import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.errors import ModelLoadError
from onnxopt.model_io import load_onnx, save_onnx


def _gemm_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.arange(400, dtype=np.float32).reshape(4, 100), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 100])], [w],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n", "git lfs pull"),
        (b"\x00\x01garbage that is not protobuf \xff\xfe" * 3, "not an ONNX model"),
        (b"hello, I am a text file\n", "not an ONNX model"),
    ],
)
def test_bad_model_files_get_one_clear_line(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_onnx(path)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)


def test_save_is_atomic_and_round_trips(tmp_path):
    path = save_onnx(_gemm_model(), tmp_path / "sub" / "m.onnx")
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]  # no temporary file left
    assert load_onnx(path).graph.node[0].name == "fc"


def test_external_data_is_loaded_and_confined(tmp_path):
    path = save_onnx(_gemm_model(), tmp_path / "m.onnx", external_data=True)
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[0].ClearField("raw_data")
    # rewrite the location to escape the model's folder: must be refused
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../evil.data"
    onnx.save(model, str(tmp_path / "evil.onnx"))
    with pytest.raises(ModelLoadError, match="outside the model's folder"):
        load_onnx(tmp_path / "evil.onnx")


def test_external_data_round_trip(tmp_path):
    path = save_onnx(_gemm_model(), tmp_path / "m.onnx", external_data=True)
    assert (tmp_path / "m.onnx.data").is_file()
    loaded = load_onnx(path)
    np.testing.assert_array_equal(
        numpy_helper.to_array(loaded.graph.initializer[0]),
        np.arange(400, dtype=np.float32).reshape(4, 100),
    )


def test_truncated_model_is_named_as_such(tmp_path):
    data = _gemm_model().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) - 9])
    with pytest.raises(ModelLoadError, match=r"cut.onnx is truncated or corrupt \([\d,]+ bytes"):
        load_onnx(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: setattr(m, "ir_version", onnx.IR_VERSION + 1), "read up to IR version"),
        (lambda m: m.opset_import[0].__setattr__("version", 999), "uses opset 999"),
        (lambda m: m.graph.node[0].input.append("nowhere"), "reads 'nowhere', which no node"),
        (lambda m: m.graph.output.add(name="ghost"), "graph output 'ghost' is computed by no node"),
    ],
)
def test_models_onnxopt_cannot_read_are_refused(tmp_path, change, message):
    model = _gemm_model()
    change(model)
    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(ModelLoadError, match=message) as info:
        load_onnx(tmp_path / "m.onnx")
    assert "\n" not in str(info.value) and info.value.exit_code == 2


def test_external_data_location_that_is_not_text(tmp_path):
    path = save_onnx(_gemm_model(), tmp_path / "m.onnx", external_data=True)
    data = path.read_bytes()
    assert data.count(b"m.onnx.data") == 1
    path.write_bytes(data.replace(b"m.onnx.data", b"m.onnx.d\xffta"))  # not valid UTF-8
    with pytest.raises(ModelLoadError, match="unreadable external data location"):
        load_onnx(path)


def test_malformed_constant_is_a_model_load_error():
    from onnxopt.exporters.user_model import prepare_user_model

    model = _gemm_model()
    bad = helper.make_node("Constant", [], ["c"], name="c")
    bad.attribute.add(name="value")  # a tensor attribute without type or tensor
    model.graph.node.insert(0, bad)
    with pytest.raises(ModelLoadError, match="malformed tensors or attributes"):
        prepare_user_model(model, "m.onnx")
