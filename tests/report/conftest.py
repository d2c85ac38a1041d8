"""A finished search with infeasible trials, exported and reported (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from onnxopt.cli import main

# 6 points, brute force: the 2-bit weights lose far more than 2 % (infeasible), the others
# are feasible; three metrics give three plots
SEARCH = """
[search.quantization.by_type.linear]
data_in_width = [4, 8]
weight_width = [2, 4, 8]
[search.strategy]
sampler = "brute-force"
n_trials = 6
[search.metrics.accuracy]
[search.metrics.size]
scale = 0.001
[search.metrics.latency_b256]
[search.constraints]
max_accuracy_drop = 0.02
"""


@pytest.fixture(scope="session")
def report_run(exported_recipe, tmp_path_factory) -> Path:
    """The run directory of a 6-trial digits-mlp search with report.html."""
    folder = tmp_path_factory.mktemp("report")
    config = folder / "search.toml"
    config.write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{SEARCH}')
    run = folder / "run"
    result = CliRunner().invoke(main, ["search", str(config), "--run-dir", str(run),
                                       "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run
