""".ci/docker_check.py, the host-side checks of the Docker CI step, fails on what it must catch
(a checker that never fails would let a broken image land). No Docker needed."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import onnx
import optuna
import pytest
from onnx import parser

ROOT = Path(__file__).resolve().parents[1]
MODEL = """
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 4] x) => (float[N, 4] y) {
    y = Relu(x)
}
"""


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("docker_check", ROOT / ".ci" / "docker_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """What a search leaves: base model, reports, a journal, one Pareto export."""
    root = tmp_path / "demo"
    (root / "pareto").mkdir(parents=True)
    model = parser.parse_model(MODEL)
    onnx.save(model, root / "base.onnx")
    onnx.save(model, root / "pareto" / "trial_0000.onnx")
    for name in ("report.json", "manifest.json"):
        (root / name).write_text(json.dumps({"ok": True}))
    (root / "study.journal").write_text("")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


def test_files_pass_for_a_clean_run_directory(check, run_dir, capsys):
    assert check.main(["files", str(run_dir), "--uid", str(os.getuid())]) == 0
    out = capsys.readouterr().out
    assert "OK: 2 model files pass onnx.checker" in out
    assert "pareto/trial_0000.onnx" in out


def test_files_fail_on_another_owner(check, run_dir, capsys):
    assert check.main(["files", str(run_dir), "--uid", str(os.getuid() + 1)]) == 1
    assert "base.onnx belongs to uid" in capsys.readouterr().err


def test_files_fail_on_a_group_writable_file(check, run_dir, capsys):
    (run_dir / "report.json").chmod(0o664)
    assert check.main(["files", str(run_dir), "--uid", str(os.getuid())]) == 1
    assert "report.json is writable by group or others" in capsys.readouterr().err


def test_files_fail_on_a_model_onnxruntime_refuses(check, run_dir, capsys):
    (run_dir / "pareto" / "trial_0000.onnx").write_bytes(b"not a model")
    assert check.main(["files", str(run_dir), "--uid", str(os.getuid())]) == 1
    assert "trial_0000.onnx" in capsys.readouterr().err


def test_files_fail_without_exports(check, run_dir, capsys):
    (run_dir / "pareto" / "trial_0000.onnx").unlink()
    assert check.main(["files", str(run_dir), "--uid", str(os.getuid())]) == 1
    assert "no exported trial_*.onnx" in capsys.readouterr().err


def test_study_passes_with_distinct_points_from_two_workers(check, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="ci", storage=url)
    for x in range(4):
        study.enqueue_trial({"x": x}, user_attrs={"worker": f"w{x % 2}"})
    study.optimize(lambda t: float(t.suggest_int("x", 0, 10)), n_trials=4)
    args = ["study", url, "ci", "--n-trials", "4", "--workers", "2"]
    assert check.main(args) == 0
    assert "OK: exactly 4 trials, no point twice, 2 workers" in capsys.readouterr().out
    assert check.main([*args[:4], "5", *args[5:]]) == 1  # n_trials differs


def test_study_fails_on_a_point_run_twice(check, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="ci", storage=url)
    for x, worker in ((1, "a"), (1, "b")):
        study.enqueue_trial({"x": x}, user_attrs={"worker": worker})
    study.optimize(lambda t: float(t.suggest_int("x", 0, 10)), n_trials=2)
    assert check.main(["study", url, "ci", "--n-trials", "2", "--workers", "2"]) == 1
    assert "1 points ran more than once" in capsys.readouterr().err
