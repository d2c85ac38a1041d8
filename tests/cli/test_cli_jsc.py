"""The JSC path end to end through the CLI, on a file in the OpenML format."""

import json

from click.testing import CliRunner

from onnxopt.cli import main


def _ok(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_jsc_train_export_evaluate_quantize(jsc_parquet, tmp_path):
    weights, model, quant = tmp_path / "w.pt", tmp_path / "m.onnx", tmp_path / "q.onnx"
    _ok("train", "jsc-toy", "--data", jsc_parquet, "--epochs", "15", "-o", weights)
    exported = _ok("export", "--weights", weights, "-o", model)
    assert "3 BatchNorm folded, 1 left" in exported  # the input BatchNorm precedes a ReLU
    report = json.loads(_ok("evaluate", model, "--data", jsc_parquet, "--json", "--no-latency"))
    assert report["n_samples"] == 300  # 20% of 1,500 distinct jets
    assert report["accuracy"] > 0.6  # 5 classes: chance is 0.2
    summary = _ok("quantize", model, "--data", jsc_parquet, "-o", quant)
    assert "left in float" in summary and "BatchNormalization" in summary
