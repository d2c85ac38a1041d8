"""The bundled non-classifier workloads, end to end through the CLI with their example configs:
the sentence encoder (fidelity and size against onnxruntime's ``quantize_dynamic``, run here
on the same base model and data) and the diabetes regressor (mse and latency, Pareto export,
report)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from onnxopt.cli import main
from onnxopt.data.registry import load_dataset
from onnxopt.optimizer.search.study import JOURNAL_FILE, STUDY_NAME, load_study

CONFIGS = Path(__file__).parents[3] / "configs"
OUTPUT_BATCH = 256  # the measurer's batch for the outputs tier (DynamicQuantizeLinear is per batch)


def _run(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options)
    n = len(next(iter(feeds.values())))
    parts = [
        session.run(None, {k: v[i : i + OUTPUT_BATCH] for k, v in feeds.items()})[0]
        for i in range(0, n, OUTPUT_BATCH)
    ]
    return np.concatenate(parts).astype(np.float64)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _search(config: Path, run_dir: Path, *extra: str):
    result = CliRunner().invoke(
        main, ["search", str(config), "--run-dir", str(run_dir), "--no-progress", *extra]
    )
    assert result.exit_code == 0, result.output
    return result, load_study(f"{run_dir / JOURNAL_FILE}", STUDY_NAME)


@pytest.mark.slow
def test_encoder_search_matches_quantize_dynamic_in_fidelity_and_size(tmp_path):
    from onnxruntime.quantization import quantize_dynamic

    run_dir = tmp_path / "encoder"
    _, study = _search(CONFIGS / "search-encoder.toml", run_dir, "--no-export")
    base = run_dir / "base.onnx"
    theirs = tmp_path / "quantize_dynamic.onnx"
    quantize_dynamic(str(base), str(theirs))  # onnxruntime's one call, its defaults
    val = load_dataset("token-corpus").val.arrays()
    reference = _run(base, val)
    cosine = _cosines(_run(theirs, val), reference)
    their_size = theirs.stat().st_size
    trials = [t for t in study.trials if t.state is TrialState.COMPLETE]
    assert len(trials) == 8 and study.user_attrs["baseline"]["cosine_to_reference"] == 1.0
    ours = [t.user_attrs["metrics"] for t in trials]
    winners = [m for m in ours if m["cosine_to_reference"] >= cosine.mean()
               and m["size"] <= their_size]  # fmt: skip
    assert winners, (cosine.mean(), their_size, ours)
    # the 4-bit tables are smaller still, at a visible fidelity cost
    assert min(m["size"] for m in ours) < min(m["size"] for m in winners)


@pytest.mark.slow
def test_regression_search_with_mse_and_latency_exports_the_pareto_front(tmp_path):
    run_dir = tmp_path / "diabetes"
    result, study = _search(CONFIGS / "search-diabetes.toml", run_dir)
    assert "fp32 baseline (validation): mse " in result.output
    trials = [t for t in study.trials if t.state is TrialState.COMPLETE]
    assert len(trials) == 6
    assert all({"mse", "mae", "r2", "latency"} <= set(t.user_attrs["metrics"]) for t in trials)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["objectives"] == ["mse", "latency"]
    exported = sorted((run_dir / "pareto").glob("trial_*.onnx"))
    assert exported and len(exported) == len(report["best"])
    # each exported file, run here on the test split, gives the mse its export recorded
    test = load_dataset("diabetes").test
    for path in exported:
        info = json.loads(path.with_suffix(".json").read_text())
        predicted = _run(path, {"x": test.x}).reshape(-1)
        mse = float(np.mean((predicted - test.y) ** 2))
        assert mse == pytest.approx(info["test_metrics"]["onnx"]["mse"], rel=1e-5)
        assert info["test_accuracy"] is None
    rows = (run_dir / "trials.csv").read_text().splitlines()
    assert rows[0].count("mse") >= 1 and len(rows) == 7
