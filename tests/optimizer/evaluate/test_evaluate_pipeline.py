"""evaluate_model end to end on saved models, its JSON form, and what it imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from sklearn.metrics import accuracy_score, log_loss

from onnxopt.data.dataset import Split
from onnxopt.errors import DataError, UsageError
from onnxopt.exporters.user_model import Preparation
from onnxopt.optimizer.evaluate import evaluate_model
from onnxopt.optimizer.quantization.metadata import BIT_WIDTHS_KEY


def test_report_matches_independent_numbers(tmp_path, gemm_builder, gemm_weights, data, reference):
    numpy_logits, softmax = reference
    x, y = data
    path = tmp_path / "gemm.onnx"
    onnx.save_model(gemm_builder(*gemm_weights), path)
    report = evaluate_model(path, Split(x, y), num_classes=5)
    logits = numpy_logits(x, *gemm_weights)
    assert report.accuracy == accuracy_score(y, logits.argmax(axis=1))
    assert report.loss == pytest.approx(log_loss(y, softmax(logits), labels=range(5)), rel=1e-5)
    assert report.n_samples == 300
    assert report.size_bytes == os.path.getsize(path)
    assert report.parameters == 16 * 5 + 5
    assert (report.average_bitwidth, report.memory_density) == (32.0, 1.0)
    assert report.theoretical_size_bytes == 85 * 4
    assert [s.batch_size for s in report.latency.stats] == [1, 256]
    assert report.latency_at(1).median_ms > 0 and report.throughput_sps > 0
    data_dict = report.to_dict()
    assert json.loads(json.dumps(data_dict)) == data_dict
    assert set(data_dict["latency_ms"]) == {"1", "256"}
    assert "parameter_tensors" not in data_dict
    assert [t["name"] for t in report.to_dict(tensors=True)["parameter_tensors"]] == ["W", "b"]


def _quantized_model(rng: np.random.Generator) -> tuple[onnx.ModelProto, np.ndarray]:
    """x @ dequantize(wq) with int8 weights stored in an external file later."""
    wq = rng.integers(-7, 8, size=(16, 5)).astype(np.int8)
    scale = np.float32(0.1)
    graph = helper.make_graph(
        [
            helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"]),
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
        ],
        "q",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.array(scale), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    helper.set_model_props(model, {BIT_WIDTHS_KEY: json.dumps({"wq": 4})})
    return model, wq.astype(np.float64) * 0.1


def test_quantized_model_with_external_data(tmp_path, data, rng, reference):
    numpy_logits, softmax = reference
    x, y = data
    model, weight = _quantized_model(rng)
    path = tmp_path / "q.onnx"
    onnx.save_model(
        model, path, save_as_external_data=True, all_tensors_to_one_file=True,
        location="q.data", size_threshold=0,
    )  # fmt: skip
    report = evaluate_model(path, Split(x, y), measure_latency=False)
    logits = numpy_logits(x, weight, np.zeros(5))
    assert report.accuracy == accuracy_score(y, logits.argmax(axis=1))
    assert report.loss == pytest.approx(log_loss(y, softmax(logits), labels=range(5)), rel=1e-5)
    assert report.size_bytes == os.path.getsize(path) + os.path.getsize(tmp_path / "q.data")
    assert (report.parameters, report.average_bitwidth, report.memory_density) == (80, 4.0, 8.0)
    assert report.theoretical_size_bytes == 40
    assert report.latency is None and report.to_dict()["throughput_sps"] is None


def test_fixed_batch_model_measures_its_own_batch(tmp_path, gemm_builder, gemm_weights, data):
    """Kept fixed (--batch-size-fixed, or measured exactly as it is) only that size runs."""
    x, y = data
    path = tmp_path / "fixed.onnx"
    onnx.save_model(gemm_builder(*gemm_weights, batch=1), path)
    for preparation in (Preparation(keep_batch=True), None):
        report = evaluate_model(
            path, Split(x[:20], y[:20]), batch_sizes=(1, 256), preparation=preparation
        )
        assert [s.batch_size for s in report.latency.stats] == [1]
        assert report.n_samples == 20 and not report.notes


def test_fixed_batch_is_freed_in_memory_and_the_file_measured(
    tmp_path, gemm_builder, gemm_weights, data
):
    x, y = data
    fixed, free = tmp_path / "fixed.onnx", tmp_path / "free.onnx"
    onnx.save_model(gemm_builder(*gemm_weights, batch=1), fixed)
    onnx.save_model(gemm_builder(*gemm_weights), free)
    split = Split(x[:20], y[:20])
    report = evaluate_model(fixed, split, batch_sizes=(1, 256), measure_latency=True)
    assert [s.batch_size for s in report.latency.stats] == [1, 256]
    assert report.notes and "batch axis freed (was fixed at 1" in report.notes[0]
    assert report.size_bytes == fixed.stat().st_size  # the file, not the repaired graph
    same = evaluate_model(free, split, measure_latency=False)
    assert report.metrics == same.metrics and report.accuracy == same.accuracy


def test_data_and_model_mismatches_surface_as_onnxopt_errors(tmp_path, gemm_builder, gemm_weights):
    path = tmp_path / "gemm.onnx"
    onnx.save_model(gemm_builder(*gemm_weights), path)
    wide = Split(np.zeros((4, 64), np.float32), np.zeros(4, np.int64))
    with pytest.raises(DataError, match="64 features per sample but model input 'x' expects 16"):
        evaluate_model(path, wide, measure_latency=False)
    two_outputs = gemm_builder(*gemm_weights)
    two_outputs.graph.output.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [16, 5]))
    onnx.save_model(two_outputs, path)
    fits = Split(np.zeros((2, 16), np.float32), np.zeros(2, np.int64))
    with pytest.raises(UsageError, match="0 of the model's outputs"):
        evaluate_model(path, fits, num_classes=7, measure_latency=False)
    assert evaluate_model(path, fits, output_name="logits", measure_latency=False).n_samples == 2


def test_package_imports_neither_torch_nor_onnxruntime():
    code = (
        "import sys\n"
        "import onnxopt.optimizer.evaluate\n"
        "assert 'onnxruntime' not in sys.modules\n"
        "from onnxopt.runtime.ort import make_session\n"
        "from onnx import parser\n"
        'make_session(parser.parse_model(\'<ir_version: 10, opset_import: ["" : 21]>'
        " g (float[N] x) => (float[N] y) { y = Relu(x) }'))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
