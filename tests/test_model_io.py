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
