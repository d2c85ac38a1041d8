"""OpenVINO, the second runtime: the same QDQ files, u8 kernels, outputs equal to onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from onnxopt.config.search import load_search_config
from onnxopt.optimizer.search.run import run_search
from onnxopt.runtime import get_backend
from onnxopt.runtime.openvino import OpenVinoBackend, executed_kernels
from tests.runtime.conftest import mlp, quantized


def test_openvino_runs_the_qdq_file_with_integer_kernels_and_matches_onnxruntime(
    features, tmp_path
):
    path = quantized(mlp([64, 128, 64, 10]), features, tmp_path / "m.onnx")
    session = get_backend("openvino").load(path, threads=1)
    kernels = executed_kernels(session)
    assert kernels.get("FullyConnected (u8)") == 3, kernels
    got = session.run({"x": features})[0]
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": features}
    )[0]
    np.testing.assert_array_equal(got, want)
    # the timing path presets the input tensor: same outputs again
    session.runner({"x": features[:7]})()
    np.testing.assert_array_equal(session.request.get_output_tensor(0).data, want[:7])


def test_evaluate_and_verify_with_runtime_openvino(features, tmp_path):
    path = quantized(mlp([64, 32, 10]), features, tmp_path / "m.onnx")
    runner = CliRunner()
    scores = {}
    for runtime in ("onnxruntime", "openvino"):
        result = runner.invoke(
            main, ["evaluate", str(path), "--runtime", runtime, "--batch-size", "1", "--json"]
        )
        assert result.exit_code == 0, result.output
        scores[runtime] = json.loads(result.output)
        assert scores[runtime]["runtime"] == runtime
        assert scores[runtime]["latency_ms"]["1"]["median_ms"] > 0
    assert scores["openvino"]["accuracy"] == scores["onnxruntime"]["accuracy"]
    assert scores["openvino"]["loss"] == pytest.approx(scores["onnxruntime"]["loss"], abs=1e-12)
    verified = runner.invoke(main, ["verify", str(path), "--runtime", "openvino"])
    assert verified.exit_code == 0 and "100.00%" in verified.output, verified.output


def test_runtime_openvino_without_the_extra_names_the_install_line(
    features, tmp_path, monkeypatch
):
    path = quantized(mlp([64, 32, 10]), features, tmp_path / "m.onnx")
    monkeypatch.setattr(OpenVinoBackend, "available", classmethod(lambda cls: False))
    result = CliRunner().invoke(main, ["evaluate", str(path), "--runtime", "openvino"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: runtime 'openvino' is not installed; install it with: "
        "pip install -e '.[openvino]'"
    )


def test_a_search_ranks_candidates_by_openvino_latency(tmp_path):
    config = tmp_path / "s.toml"
    config.write_text(
        """
[model]
recipe = "digits-mlp"
epochs = 2
[search.quantization.by_type.linear]
weight_width = [4, 8]
[search.strategy]
sampler = "brute-force"
n_trials = 2
[search.metrics.accuracy]
[search.metrics.latency]
[search.evaluation]
runtime = "openvino"
batch_sizes = [1]
"""
    )
    result = run_search(load_search_config(config), run_dir=tmp_path / "run", progress=False)
    trials = result.study.trials
    assert len(trials) == 2 and all(t.user_attrs["metrics"]["latency"] > 0 for t in trials)
    assert result.study.user_attrs["config"]["search"]["evaluation"]["runtime"] == "openvino"
