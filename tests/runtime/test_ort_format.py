"""ORT-format exports run what the .onnx runs: same integer kernels, identical outputs."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from onnxopt.runtime.kernels import INTEGER_KERNELS, profiled_kernels
from onnxopt.runtime.ort_format import save_ort_format
from tests.runtime.conftest import mlp, quantized


def _outputs(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _integer(kernels: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in kernels.items() if k in INTEGER_KERNELS}


@pytest.mark.parametrize("storage", ["container", "packed"])
def test_ort_runs_the_same_integer_kernels_with_identical_outputs(storage, features, tmp_path):
    widths = {"container": 8, "packed": 4}
    onnx_path = quantized(
        mlp([64, 512, 512, 10]), features, tmp_path / "m.onnx", storage=storage,
        default={"weight_width": widths[storage]},
    )  # fmt: skip
    done = save_ort_format(onnx_path, tmp_path / "m.ort")
    x = features[:32]
    onnx_kernels = profiled_kernels(onnx_path, {"x": x})
    ort_kernels = profiled_kernels(done.model, {"x": x})
    assert _integer(onnx_kernels) == _integer(ort_kernels) == {"QGemm": 3}
    assert "Gemm" not in ort_kernels and "DequantizeLinear" not in ort_kernels
    np.testing.assert_array_equal(_outputs(done.model, x), _outputs(onnx_path, x))
    config = done.operators.read_text()
    assert "com.microsoft;1;QGemm" in config and "ai.onnx;21;QuantizeLinear" in config
    if storage == "container":
        assert done.model.stat().st_size <= 1.1 * onnx_path.stat().st_size
    else:
        # the ORT format has no 4-bit tensors: the .ort holds the int8 the kernels read
        container = quantized(
            mlp([64, 512, 512, 10]), features, tmp_path / "c.onnx",
            default={"weight_width": 4},
        )  # fmt: skip
        assert done.model.stat().st_size <= 1.1 * container.stat().st_size


def test_the_converters_runtime_style_accepts_onnxopt_models(features, tmp_path):
    """Every DequantizeLinear has an explicit zero point (the bias's included), which the
    converter's "Runtime" optimization style needs."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    onnx_path = quantized(mlp([64, 32, 10]), features, tmp_path / "m.onnx")
    with contextlib.redirect_stdout(io.StringIO()):
        convert_onnx_models_to_ort(
            onnx_path, output_dir=tmp_path / "out", optimization_styles=[OptimizationStyle.Runtime]
        )
    (converted,) = (tmp_path / "out").glob("*.ort")
    x = features[:8]
    np.testing.assert_allclose(_outputs(converted, x), _outputs(onnx_path, x), rtol=0, atol=0)


def test_evaluate_reads_an_ort_file_and_scores_it_like_its_onnx(features, tmp_path):
    onnx_path = quantized(mlp([64, 32, 10]), features, tmp_path / "m.onnx")
    ort_path = save_ort_format(onnx_path, tmp_path / "m.ort").model
    runner = CliRunner()
    reports = []
    for path in (onnx_path, ort_path):
        result = runner.invoke(main, ["evaluate", str(path), "--no-latency", "--json"])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(result.output))
    onnx_report, ort_report = reports
    assert ort_report["accuracy"] == onnx_report["accuracy"]
    assert ort_report["loss"] == onnx_report["loss"]
    assert ort_report["size_bytes"] == ort_path.stat().st_size
    assert ort_report["parameters"] is None and onnx_report["parameters"] > 0


@pytest.mark.parametrize("command", ["quantize", "scale", "export", "verify"])
def test_an_ort_file_cannot_be_rewritten_and_says_to_pass_the_onnx(command, features, tmp_path):
    onnx_path = quantized(mlp([64, 32, 10]), features, tmp_path / "m.onnx")
    ort_path = save_ort_format(onnx_path, tmp_path / "m.ort").model
    (tmp_path / "w.toml").write_text("[layers.fc0]\nchannel_multiplier = 0.5\n")
    extra = {"scale": ["--config", str(tmp_path / "w.toml")], "verify": []}.get(command, [])
    out = [] if command == "verify" else ["-o", str(tmp_path / "out.onnx")]
    result = CliRunner().invoke(main, [command, str(ort_path), *extra, *out])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is an ORT-format model" in lines[0]
    assert "pass the .onnx it was converted from" in lines[0]
    assert not (tmp_path / "out.onnx").exists()
