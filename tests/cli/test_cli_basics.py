"""The CLI through click's CliRunner: real commands, their output, errors and exit codes."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from onnxopt.cli import main


@pytest.fixture()
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_train_export_evaluate_round_trip(run, tmp_path, digits):
    weights, model = tmp_path / "mlp.pt", tmp_path / "mlp.onnx"
    result = run("train", "digits-mlp", "--epochs", "8", "-o", weights)
    assert result.exit_code == 0, result.output
    assert "best validation accuracy" in result.output and weights.is_file()

    result = run("export", "--weights", weights, "-o", model)
    assert result.exit_code == 0, result.output
    assert "dynamo exporter" in result.output and "2 BatchNorm folded" in result.output

    result = run(
        "evaluate", model, "--data", "digits", "--json", "--batch-size", "1", "--batch-size", "32"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["n_samples"] == len(digits.test) == 360
    assert 0.85 <= report["accuracy"] <= 1.0
    assert report["parameters"] == 6762 - 2 * (64 + 32)  # BatchNorm folded into the Gemms
    assert report["average_bitwidth"] == 32 and report["memory_density"] == 1
    assert report["size_bytes"] == model.stat().st_size

    result = run("evaluate", model, "--no-latency")
    assert result.exit_code == 0 and "accuracy" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "digit-mlp", "-o", "w.pt"],
            "unknown recipe 'digit-mlp'; did you mean 'digits-mlp'",
        ),
        (["evaluate", "missing.onnx"], "does not exist"),
        (["evaluate", "not_onnx.onnx"], "not an ONNX model"),
        (["train", "jsc-tiny", "--data", "nowhere.npz", "-o", "w.pt"], "no such file"),
        (["export", "-o", "x.onnx"], "give an ONNX MODEL"),
        (
            ["export", "--factory", "nomodule", "--input-shape", "4", "-o", "x.onnx"],
            "module:function",
        ),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(run, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not_onnx.onnx").write_text("just text\n")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output


def test_feature_count_mismatch_is_exit_2(run, tmp_path, exported_recipe):
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.standard_normal((100, 16)).astype(np.float32), y=rng.integers(0, 5, 100))
    result = CliRunner().invoke(
        main, ["evaluate", str(exported_recipe("digits-mlp")), "--data", str(data), "--no-latency"]
    )
    assert result.exit_code == 2
    assert "16 features" in result.output and "expects 64" in result.output


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "evaluate", str(tmp_path / "missing.onnx")])
    assert result.exit_code != 0 and result.exception is not None


def test_export_accepts_an_onnx_file(run, tmp_path, exported_recipe):
    result = run("export", exported_recipe("digits-cnn"), "-o", tmp_path / "p.onnx")
    assert result.exit_code == 0, result.output
    assert "opset 21 -> 21" in result.output and (tmp_path / "p.onnx").is_file()


def test_export_from_a_factory(run, tmp_path):
    result = run(
        "export",
        "--factory",
        "onnxopt.models.recipes:jsc_tiny_default",
        "--input-shape",
        "16",
        "-o",
        tmp_path / "f.onnx",
    )
    assert result.exit_code == 2  # no such function: a usage error, not a crash
    result = run(
        "export", "--factory", "torch.nn:Identity", "--input-shape", "16", "-o", tmp_path / "f.onnx"
    )
    assert result.exit_code == 0, result.output
