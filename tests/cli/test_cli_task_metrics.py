"""Task metrics through the CLI: a user metric from ``file.py:fn`` in ``evaluate`` and as a
search objective, user metrics that raise or return NaN (on the fp32 baseline: exit 2 before
any study exists; on a candidate: a FAIL trial with the reason), unknown metric names (closest
first) and labelled metrics on unlabelled data (the missing array named).

The model is a two-layer MatMul regressor written with onnx.helper; the data are npz files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from optuna.trial import TrialState

from onnxopt.cli import main
from onnxopt.optimizer.search.study import JOURNAL_FILE, STUDY_NAME, load_study

METRICS_PY = '''
import numpy as np

def neg_rmse(outputs, targets):
    return -float(np.sqrt(np.mean((outputs.reshape(-1) - targets.reshape(-1)) ** 2)))

def boom(outputs, targets):
    raise ValueError("my metric is broken")

def nan(outputs, targets):
    return float("nan")

_FIRST = []

def only_fp32(outputs, targets):
    """Fine on the first outputs it sees (the fp32 baseline), raises on any others."""
    if not _FIRST:
        _FIRST.append(outputs.copy())
    if not np.array_equal(outputs, _FIRST[0]):
        raise RuntimeError("fails on quantized outputs")
    return 1.0
'''


@pytest.fixture
def files(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.5, (6, 16)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (16, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["a"], "fc1"),
         helper.make_node("Relu", ["a"], ["r"], "relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], "fc2")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(tmp_path / "m.onnx"))
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (np.maximum(x @ w1, 0) @ w2).reshape(-1) + rng.normal(0, 0.01, 300).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=y.astype(np.float32))
    np.savez(tmp_path / "nolabel.npz", x=x)
    (tmp_path / "metrics.py").write_text(METRICS_PY)
    return tmp_path


def _evaluate(files: Path, *args: str):
    return CliRunner().invoke(main, [
        "evaluate", str(files / "m.onnx"), "--task", "regression", "--no-latency", "--json",
        *args,
    ])  # fmt: skip


def _search_config(files: Path, function: str, *, extra: str = "") -> Path:
    path = files / "search.toml"
    path.write_text(f'''
[model]
onnx = "m.onnx"
task = "regression"
[data]
dataset = "d.npz"
[search.quantization.by_type.linear]
weight_width = [4, 8]
[search.strategy]
sampler = "brute-force"
n_trials = 2
[search.metrics.mine]
function = "{function}"
direction = "maximize"
[search.metrics.size]
[search.evaluation]
batch_sizes = [1]
repeats = 1
{extra}''')
    return path


def _search(files: Path, config: Path):
    run_dir = files / "run"
    result = CliRunner().invoke(
        main, ["search", str(config), "--run-dir", str(run_dir), "--no-progress", "--no-export"]
    )
    return result, run_dir


def test_a_user_metric_from_a_file_in_evaluate(files):
    mine = f"mine={files / 'metrics.py'}:neg_rmse"
    result = _evaluate(files, "--data", str(files / "d.npz"), "--metric", mine, "--metric", "mse")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    assert metrics["mine"] == pytest.approx(-np.sqrt(metrics["mse"]), rel=1e-6)
    assert metrics["mine"] < 0  # a float model with noisy targets: not exact


@pytest.mark.parametrize(
    ("function", "message"),
    [("boom", "metric 'mine': its function raised ValueError: my metric is broken"),
     ("nan", "metric 'mine': the function returned nan, not a finite number")],
)  # fmt: skip
def test_a_failing_user_metric_in_evaluate_is_one_line_exit_2(files, function, message):
    result = _evaluate(files, "--data", str(files / "d.npz"),
                       "--metric", f"mine={files / 'metrics.py'}:{function}")  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {message}" or message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_user_metric_as_a_search_objective(files):
    result, run_dir = _search(files, _search_config(files, "metrics.py:neg_rmse"))
    assert result.exit_code == 0, result.output
    study = load_study(str(run_dir / JOURNAL_FILE), STUDY_NAME)
    assert study.user_attrs["objectives"] == ["mine", "size"]
    trials = study.trials
    assert len(trials) == 2 and all(t.state is TrialState.COMPLETE for t in trials)
    for t in trials:
        m = t.user_attrs["metrics"]
        assert t.values[0] == m["mine"] == pytest.approx(-np.sqrt(m["mse"]), rel=1e-6)
    assert study.user_attrs["baseline"]["mine"] > max(t.values[0] for t in trials) - 1e-3


@pytest.mark.parametrize(
    ("function", "message"),
    [("boom", "its function raised ValueError: my metric is broken"),
     ("nan", "the function returned nan, not a finite number")],
)  # fmt: skip
def test_a_failing_user_metric_stops_the_search_before_the_study(files, function, message):
    result, run_dir = _search(files, _search_config(files, f"metrics.py:{function}"))
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == f"error: on the fp32 baseline, metric 'mine': {message}" or message in last
    assert not (run_dir / JOURNAL_FILE).exists()
    assert not list(run_dir.glob("study*")) if run_dir.exists() else True


def test_a_user_metric_failing_on_a_candidate_fails_that_trial(files):
    result, run_dir = _search(files, _search_config(files, "metrics.py:only_fp32"))
    # every trial failed: the search says why and exits 1 (the study and its trials stay)
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: every trial failed (2): MetricError: metric 'mine'"), last
    study = load_study(str(run_dir / JOURNAL_FILE), STUDY_NAME)
    assert study.user_attrs["baseline"]["mine"] == 1.0
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    for t in study.trials:
        assert t.user_attrs["fail_reason"] == (
            "MetricError: metric 'mine': its function raised RuntimeError: fails on quantized "
            "outputs; it is called as fn(outputs, targets)"
        )


def test_an_unknown_metric_lists_the_closest_names_first(files):
    result = _evaluate(files, "--data", str(files / "d.npz"), "--metric", "cosine_to_referenc")
    assert result.exit_code == 2
    closest = "did you mean 'cosine_to_reference', 'cosine_to_reference_min'?"
    assert f"unknown metric 'cosine_to_referenc'; {closest}" in result.output
    config = _search_config(files, "metrics.py:neg_rmse", extra="[search.metrics.mae_]\n")
    result, run_dir = _search(files, config)
    assert result.exit_code == 2 and "unknown metric 'mae_'; did you mean 'mae'" in result.output
    assert not (run_dir / JOURNAL_FILE).exists()


@pytest.mark.parametrize(
    ("metric", "missing"),
    [("mse", "regression targets: the data have no float 'y' array"),
     ("accuracy", "class labels: the data have no integer 'y' array")],
)  # fmt: skip
def test_a_labelled_metric_on_unlabelled_data_names_the_missing_array(files, metric, missing):
    result = _evaluate(files, "--data", str(files / "nolabel.npz"), "--metric", metric)
    assert result.exit_code == 2
    assert f"metric {metric!r} needs {missing}" in result.output
    # the fidelity metrics need no labels at all
    ok = _evaluate(files, "--data", str(files / "nolabel.npz"), "--task", "embedding",
                   "--reference", str(files / "m.onnx"),
                   "--metric", "cosine_to_reference")  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["metrics"]["cosine_to_reference"] == pytest.approx(1.0)
