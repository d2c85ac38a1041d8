"""Item 8, models: sparse initializers (third-party files have them) are densified on load with
one note; sparse tensors onnxopt cannot densify safely are one line (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from reliability_helpers import assert_one_line

from onnxopt.errors import ModelLoadError
from onnxopt.model_io import load_onnx

RNG = np.random.default_rng(0)
W = np.where(RNG.random((64, 10)) < 0.2, RNG.normal(size=(64, 10)), 0).astype(np.float32)


def sparse(dense: np.ndarray, name: str, *, coordinates: bool = False) -> onnx.SparseTensorProto:
    """``dense`` as a SparseTensorProto: linear indices, or (NNZ, rank) coordinates."""
    flat = np.flatnonzero(dense)
    idx = np.argwhere(dense) if coordinates else flat
    return helper.make_sparse_tensor(
        numpy_helper.from_array(dense.reshape(-1)[flat], name),
        numpy_helper.from_array(idx.astype(np.int64), f"{name}_indices"),
        list(dense.shape),
    )


def sparse_model(weight: onnx.SparseTensorProto | None = None, **kwargs) -> onnx.ModelProto:
    """``x ['N', 64] -> Gemm 'fc' (W sparse, b dense) -> y ['N', 10]``."""
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="fc")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.zeros(10, np.float32), "b")],
        sparse_initializer=[weight or sparse(W, "W", **kwargs)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("coordinates", [False, True])
def test_load_densifies_sparse_initializers(tmp_path: Path, coordinates: bool) -> None:
    path = save(sparse_model(coordinates=coordinates), tmp_path / "s.onnx")
    notes: list[str] = []
    model = load_onnx(path, notes=notes)
    assert not model.graph.sparse_initializer
    dense = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(dense["W"], W)
    assert notes == [f"{path}: 1 sparse initializer(s) ('W') stored dense"]
    x = RNG.normal(size=(3, 64)).astype(np.float32)
    got = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x @ W, rtol=1e-5, atol=1e-5)


def test_cli_evaluate_counts_the_sparse_weights(tmp_path: Path, cli) -> None:
    save(sparse_model(), tmp_path / "s.onnx")
    data = RNG.normal(size=(40, 64)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=data, y=(data @ W).argmax(axis=1))
    code, out, err = cli("evaluate", "s.onnx", "--data", "d.npz", "--no-latency", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["parameters"] == W.size + 10 and report["accuracy"] == 1.0


def test_cli_quantize_a_sparse_model(tmp_path: Path, cli) -> None:
    save(sparse_model(), tmp_path / "s.onnx")
    code, out, err = cli("quantize", "s.onnx", "-o", "q.onnx", "--json")
    assert code == 0, err
    assert "note: s.onnx: 1 sparse initializer(s) ('W') stored dense" in err
    assert json.loads(out)["fused_kernels"].get("QGemm") == 1


def test_sparse_constant_node_is_densified(tmp_path: Path, cli) -> None:
    model = sparse_model()
    del model.graph.sparse_initializer[:]
    const = helper.make_node("Constant", [], ["W"], name="w", sparse_value=sparse(W, "W"))
    model.graph.node.insert(0, const)
    save(model, tmp_path / "c.onnx")
    loaded = load_onnx(tmp_path / "c.onnx")
    value = next(a for a in loaded.graph.node[0].attribute if a.name == "value")
    np.testing.assert_array_equal(numpy_helper.to_array(value.t), W)
    code, _, err = cli("quantize", "c.onnx", "-o", "q.onnx")
    assert code == 0, err


def _refused(path: Path, *fragments: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_onnx(path)
    line = str(info.value)
    assert "\n" not in line
    for fragment in fragments:
        assert fragment in line, line


def test_sparse_indices_out_of_range(tmp_path: Path, cli) -> None:
    bad = sparse(W, "W")
    bad.indices.CopyFrom(numpy_helper.from_array(np.array([5, 640], np.int64), "W_indices"))
    bad.values.CopyFrom(numpy_helper.from_array(np.ones(2, np.float32), "W"))
    save(sparse_model(bad), tmp_path / "s.onnx")
    _refused(tmp_path / "s.onnx", "sparse tensor 'W'", "indices")
    assert_one_line(cli("quantize", "s.onnx", "-o", "q.onnx"), "sparse tensor 'W'")


def test_sparse_tensor_too_big_to_densify(tmp_path: Path) -> None:
    huge = sparse(W, "W")
    del huge.dims[:]
    huge.dims.extend([2**20, 2**20])  # 4 TiB dense
    save(sparse_model(huge), tmp_path / "s.onnx")
    _refused(tmp_path / "s.onnx", "sparse tensor 'W'", "TiB")


def test_sparse_values_in_an_external_file_are_refused(tmp_path: Path) -> None:
    model = sparse_model()
    values = model.graph.sparse_initializer[0].values
    values.ClearField("raw_data")
    del values.float_data[:]
    values.data_location = TensorProto.EXTERNAL
    values.external_data.add(key="location", value="../../etc/passwd")
    save(model, tmp_path / "s.onnx")
    _refused(tmp_path / "s.onnx", "sparse tensor 'W'", "external")
