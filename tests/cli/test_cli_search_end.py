"""The end of `onnxopt search` through CliRunner: what to ship, counts, next commands; a
search whose every trial failed exits 1 with its top reasons; an all-infeasible one says which
constraints were violated."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from onnxopt.cli import main
from onnxopt.errors import RewriteError
from onnxopt.optimizer.search.candidate import CandidateBuilder

SPACE = """
[search.quantization.by_type.linear]
data_in_width = [4, 8]
weight_width = [2, 8]
[search.strategy]
sampler = "brute-force"
n_trials = 4
[search.metrics.accuracy]
[search.metrics.size]
[search.evaluation]
batch_sizes = [1, 64]
"""



def _search(path: Path, run: Path, *extra: str):
    return CliRunner().invoke(main, ["search", str(path), "--run-dir", str(run), "--no-progress",
                                     *extra])  # fmt: skip


def test_the_end_tells_what_to_ship_and_what_to_run_next(config, tmp_path):
    run = tmp_path / "run"
    body = SPACE + "[search.constraints]\nmax_accuracy_drop = 0.03\n"
    body += "[search.export]\nformats = [\"onnx\"]\n"
    result = _search(config(body), run)
    assert result.exit_code == 0, result.output
    out = result.output
    # progress lines for the baseline, the fp32 test measurement and each export
    assert "measuring the fp32 baseline" in out and "fp32 base model on the test split" in out
    assert re.search(r"exporting trial \d+ \(1/\d+\)", out)
    counts = re.search(r"4 trials: 4 complete \((\d) feasible, (\d) infeasible: accuracy_drop (\d)"
                       r"\), 0 failed", out)  # fmt: skip
    assert counts, out
    feasible, infeasible, violated = map(int, counts.groups())
    assert feasible + infeasible == 4 and infeasible == violated >= 1  # 2-bit weights break it
    assert "visited 4 of 4 points (100.0%)" in out
    head, *rows = out.split("to ship (test split")[1].split("next:")[0].strip().splitlines()[1:]
    columns = head.split()
    for name in ("trial", "val", "test", "vs", "bytes", "smaller", "b1", "b64", "faster", "file"):
        assert name in columns, head
    exported = sorted((run / "pareto").glob("trial_*.onnx"))
    assert len(rows) == len(exported) >= 1
    for row in rows:
        cells = row.split()
        onnx = Path(cells[-1])
        assert onnx.is_file() and onnx in exported
        assert f"{onnx.stat().st_size:,}" in cells
        smaller = float(next(c for c in cells if c.endswith("x"))[:-1])
        assert smaller > 1.0  # 8-bit or narrower weights are smaller than fp32
        # latency: a median with its interquartile range, low <= median <= high
        for median, low, high in re.findall(r"([\d.e-]+) \(([\d.e-]+)-([\d.e-]+)\)", row):
            assert float(low) <= float(median) <= float(high)
    assert f"onnxopt select {run} --rule 'min size where accuracy_drop <= 0.03'" in out
    assert f"onnxopt dashboard {run}" in out and "report: " in out


def test_all_infeasible_exits_0_with_the_violated_constraints(config, tmp_path):
    body = SPACE + "[search.constraints]\nmax_accuracy_drop = 0.0\nmax_size_bytes = 100\n"
    result = _search(config(body), tmp_path / "run", "--no-export")
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("no feasible trial:"))
    assert "4 violated size" in line and "[search.constraints]" in line


def test_every_trial_failing_exits_1_with_the_top_reasons(config, tmp_path, monkeypatch):
    def build(self, space, choice):
        q = choice.quant["by_type.linear"]
        raise RewriteError(f"cannot do weights {q['weight_width']} bits")

    monkeypatch.setattr(CandidateBuilder, "build", build)
    result = _search(config(SPACE), tmp_path / "run")
    assert result.exit_code == 1, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1
    assert "every trial failed (4)" in errors[0]
    assert "RewriteError: cannot do weights 2 bits: 2" in errors[0]
    assert "RewriteError: cannot do weights 8 bits: 2" in errors[0]
    assert (tmp_path / "run" / "trials.csv").is_file()
