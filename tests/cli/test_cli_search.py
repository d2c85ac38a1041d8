"""`onnxopt search` and `onnxopt select` through click's CliRunner; every example config runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from onnxopt.data.jsc import OPENML_FEATURES

CONFIGS = Path(__file__).parents[2] / "configs"
QUANT = """
[search.quantization.by_type.linear]
data_in_width = [4, 8]
weight_width = [2, 4, 8]
[search.strategy]
sampler = "tpe"
n_trials = 6
[search.metrics.accuracy]
[search.metrics.size]
"""



def test_search_writes_outputs_and_select_exports(config, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, ["search", str(config(QUANT)), "--run-dir", str(run),
                                       "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Pareto set" in result.output and "software_metrics" in result.output
    for name in ("study.journal", "trials.csv", "report.json", "manifest.json", "report.html",
                 "quantize_static.onnx"):  # fmt: skip
        assert (run / name).is_file(), name
    report = json.loads((run / "report.json").read_text())
    assert report["best"] and all(b["export"]["test_accuracy"] > 0 for b in report["best"])
    assert list((run / "pareto").glob("*.ort"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["data_fingerprint"] and manifest["versions"]["optuna"]
    assert len((run / "trials.csv").read_text().splitlines()) == 7
    rule = "min size where accuracy_drop <= 0.05"
    picked = CliRunner().invoke(main, ["select", str(run), "--rule", rule])
    assert picked.exit_code == 0, picked.output
    assert (run / "selected").is_dir()
    again = CliRunner().invoke(main, ["select", str(run), "--minimize", "size",
                                      "--max-accuracy-drop", "0.05"])  # fmt: skip
    assert again.exit_code == 0 and again.output.split(":")[0] == picked.output.split(":")[0]


def test_existing_study_needs_resume(config, tmp_path):
    path = config(QUANT.replace("n_trials = 6", "n_trials = 1"))
    args = ["search", str(path), "--run-dir", str(tmp_path / "r"), "--no-progress", "--no-export"]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--resume" in again.output


def test_config_typo_exits_2_with_closest_key(config):
    result = CliRunner().invoke(
        main, ["search", str(config(QUANT.replace("weight_width", "wieght_width")))]
    )
    assert result.exit_code == 2
    assert "wieght_width" in result.output and "'weight_width'" in result.output


def test_unknown_sampler_exits_2(config):
    result = CliRunner().invoke(
        main, ["search", str(config(QUANT.replace('"tpe"', '"annealing"')))]
    )
    assert result.exit_code == 2 and "unknown sampler 'annealing'" in result.output


def _jsc_parquet(path: Path, n: int = 600) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, n)
    x = rng.standard_normal((n, len(OPENML_FEATURES))) + y[:, None] * 0.8
    frame = pd.DataFrame(x.astype(np.float32), columns=list(OPENML_FEATURES))
    frame["jet_type"] = np.array(list("gqwzt"))[y]
    frame.to_parquet(path)


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("search-*.toml")))
def test_example_config_runs(name, tmp_path):
    config = tmp_path / name
    text = (CONFIGS / name).read_text()
    assert not re.search(r"^epochs\s*=", text, re.M), "bundled configs train the full recipe"
    # the config runs as it is, with a 2-epoch base model (its full training is benchmarked)
    config.write_text(text.replace("[model]\n", "[model]\nepochs = 2\n", 1))
    if "jsc" in name:
        _jsc_parquet(tmp_path / "jsc.parquet")
    result = CliRunner().invoke(main, ["search", str(config), "--n-trials", "3", "--run-dir",
                                       str(tmp_path / "run"), "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "report.json").is_file()
