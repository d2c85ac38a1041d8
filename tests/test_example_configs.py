"""Every example quantization config in configs/ loads and runs through the CLI."""

from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from onnxopt.optimizer.evaluate import evaluate_model

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("quantize-*.toml"))
MODEL_FOR = {"quantize-cnn-mixed.toml": "digits-cnn"}


def test_there_are_example_configs():
    assert len(CONFIGS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_example_config_runs(config, exported_recipe, digits, tmp_path):
    model = exported_recipe(MODEL_FOR.get(config.name, "digits-mlp"))
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(main, ["quantize", str(model), "--config", str(config),
                                       "-o", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    report = evaluate_model(out, digits.test, measure_latency=False)
    assert report.accuracy > 0.8 and report.average_bitwidth < 16
