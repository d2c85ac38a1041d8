"""`onnxopt quantize` reports what really runs, every node left in float, the theoretical
size, and never leaves a file onnxruntime cannot load."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxopt.cli import main
from onnxopt.optimizer.evaluate import parameter_stats
from onnxopt.runtime.kernels import INTEGER_KERNELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "optimizer" / "quantization"))
from qdq_helpers import cnn_model  # noqa: E402

RNG = np.random.default_rng(0)


def _quantize(tmp_path: Path, model: onnx.ModelProto, *args: str, data: Path | None = None):
    source = tmp_path / "in.onnx"
    onnx.save(model, source)
    extra = ["--data", str(data)] if data else []
    return CliRunner().invoke(
        main, ["quantize", str(source), "-o", str(tmp_path / "q.onnx"), *extra, *args]
    )


@pytest.fixture()
def images(tmp_path) -> Path:
    path = tmp_path / "img.npz"
    np.savez(path, x=RNG.standard_normal((200, 64)).astype(np.float32), y=RNG.integers(0, 10, 200))
    return path


def test_cnn_kernels_in_the_report_agree_with_what_onnxruntime_runs(tmp_path, images):
    result = _quantize(tmp_path, cnn_model()[0], "--json", data=images)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["expected_kernels"] == {"conv1": "QLinearConv", "conv2": "QLinearConv",
                                          "fc": "QGemm"}  # fmt: skip
    counted = {k: v for k, v in report["fused_kernels"].items() if k in INTEGER_KERNELS}
    expected: dict[str, int] = {}
    for kernel in report["expected_kernels"].values():
        expected[kernel] = expected.get(kernel, 0) + 1
    assert counted == expected
    assert not [lbl for lbl in report["labels"] if lbl["tensor"] == "kernel"]

    text = _quantize(tmp_path, cnn_model()[0], data=images).output
    assert "conv1: runs as QLinearConv" in text
    assert "not fused" not in text and "None" not in text


def test_kernel_notes_name_nodes_without_none_widths(tmp_path, images):
    text = _quantize(tmp_path, cnn_model()[0], "--config", _toml(tmp_path, "[default]\n"
                     "data_in_width = 12\n"), data=images).output  # fmt: skip
    assert "conv1: runs as float (not fused)" in text
    assert "note: conv1, conv2: 16-bit activations: no integer Conv kernel" in text
    assert "note: fc: 16-bit activations" in text
    assert "None" not in text


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "q.toml"
    path.write_text(text)
    return str(path)


def _skip_model() -> onnx.ModelProto:
    """/tmp/audit4/mk_skip.py: mm2's weight is a Transpose output, not an initializer."""
    w = numpy_helper.from_array((RNG.standard_normal((64, 10)) * 0.1).astype(np.float32), "W")
    w2 = numpy_helper.from_array((RNG.standard_normal((10, 10)) * 0.1).astype(np.float32), "W2")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], "mm1"),
        helper.make_node("Relu", ["h"], ["r"], "node_relu"),
        helper.make_node("Transpose", ["W2"], ["W2t"], "tr"),
        helper.make_node("MatMul", ["r", "W2t"], ["y"], "mm2"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], [w, w2],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def test_every_node_left_in_float_is_listed_with_its_reason(tmp_path):
    config = _toml(tmp_path, '[by_name."node_relu"]\nweight_width = 4\n')
    result = _quantize(tmp_path, _skip_model(), "--config", config)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    skipped = "  left in float: mm2: MatMul not quantized: weight input is not a constant"
    assert skipped + " initializer" in lines
    assert any(
        line.startswith("  left in float: node_relu: op type 'Relu' is not quantized")
        and line.endswith('its [by_name."node_relu"] settings have no effect')
        for line in lines
    ), result.output
    assert "  left in float: tr: Transpose is not quantized by onnxopt" in result.output
    report = json.loads(_quantize(tmp_path, _skip_model(), "--config", config, "--json").output)
    assert set(report["float_nodes"]) == {"mm2", "node_relu", "tr"}
    assert report["skipped"].keys() <= report["float_nodes"].keys()


def test_theoretical_size_beside_the_sizes_on_disk(tmp_path, images):
    result = _quantize(tmp_path, cnn_model()[0], "--json", data=images)
    report = json.loads(result.output)
    stats = parameter_stats(onnx.load(tmp_path / "q.onnx"))
    assert report["theoretical_size_bytes"] == pytest.approx(stats.theoretical_size_bytes)
    assert report["theoretical_size_bytes"] < report["size_bytes"]["container"]
    text = _quantize(tmp_path, cnn_model()[0], data=images).output
    line = next(ln for ln in text.splitlines() if ln.startswith("size theoretical"))
    assert f"{stats.theoretical_size_bytes:,.0f} bytes (sum of bits / 8;" in line
    assert "q.onnx is" in line


def test_opset_28_leaves_no_file_and_says_how_to_fix_it(tmp_path):
    model, _ = cnn_model()
    model = onnx.version_converter.convert_version(model, 28)
    data = tmp_path / "img.npz"
    np.savez(data, x=RNG.standard_normal((50, 64)).astype(np.float32), y=RNG.integers(0, 10, 50))
    result = _quantize(tmp_path, model, data=data)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert "QuantizeLinear(28)" in result.output and "--opset 21" in result.output
    assert not (tmp_path / "q.onnx").exists() and not list(tmp_path.glob(".q.onnx*"))
