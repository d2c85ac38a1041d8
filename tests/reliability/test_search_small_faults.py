"""Issue 14 item 9: the smaller faults of a search's life cycle.

Ctrl-C inside ``ask()``; a stale export beside a new best set; ``--resume --no-export``
forgetting the exports on disk; ``status`` counting against the first run's target;
``--resume --workers 2`` on a finished study; hidden temporaries left by kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from reliability_helpers import CHEAP_EVALUATION

from onnxopt.atomic import atomic_path, sweep_stale
from onnxopt.config.search import load_search_config
from onnxopt.optimizer.search.context import SearchContext
from onnxopt.optimizer.search.objective import Objective
from onnxopt.optimizer.search.storage import open_storage
from onnxopt.optimizer.search.study import is_interrupted
from onnxopt.optimizer.search.worker import TrialLoop

CHEAP = f"""
{CHEAP_EVALUATION}"""
TWO_POINTS = (
    """
[search.quantization.by_type.linear]
weight_width = [2, 8]
[search.strategy]
sampler = "brute-force"
n_trials = 1
enqueue = [{"q.by_type.linear.weight_width" = 2}]
[search.metrics.accuracy]
"""
    + CHEAP
)


class InterruptedAsk(optuna.samplers.RandomSampler):
    """Ctrl-C arriving while ``study.ask()`` runs (after the trial exists in the storage)."""

    def infer_relative_search_space(self, study, trial):
        raise KeyboardInterrupt


def test_ctrl_c_inside_ask_fails_the_trial_as_interrupted(config, tmp_path):
    cfg = load_search_config(config(TWO_POINTS))
    ctx = SearchContext.prepare(cfg, tmp_path / "run")
    storage = open_storage(str(tmp_path / "s.journal"))
    study = optuna.create_study(storage=storage, study_name="s", sampler=InterruptedAsk(),
                                direction="maximize")  # fmt: skip
    evaluator = ctx.evaluator.for_trials({"accuracy": 0.9}, ctx.reference())
    objective = Objective(ctx.space, ctx.builder, evaluator)
    with pytest.raises(KeyboardInterrupt):
        TrialLoop(study, storage, objective, limit=2).run()
    (trial,) = study.trials
    assert trial.state is TrialState.FAIL and is_interrupted(trial)  # was left RUNNING


def _search(path: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "onnxopt", "search", str(path), "--run-dir", str(run),
           "--no-progress", *extra]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_a_resumed_search_exports_exactly_the_new_best_set(config, tmp_path):
    path, run = config(TWO_POINTS), tmp_path / "run"
    assert _search(path, run).returncode == 0
    assert sorted(p.name for p in (run / "pareto").glob("*.onnx")) == ["trial_0000.onnx"]
    done = _search(path, run, "--resume", "--n-trials", "2")  # trial 1: 8 bits, the new best
    assert done.returncode == 0, done.stderr
    names = {p.name.split(".")[0] for p in (run / "pareto").iterdir()}
    assert names == {"trial_0001"}  # trial 0's files were left beside the new best
    report = json.loads((run / "report.json").read_text())
    assert [b["number"] for b in report["best"]] == [1]

    # --resume --no-export rewrote report.json without the exports that are still on disk
    again = _search(path, run, "--resume", "--no-export")
    assert again.returncode == 0, again.stderr
    (best,) = json.loads((run / "report.json").read_text())["best"]
    assert best["export"] is not None
    assert Path(best["export"]["onnx_path"]) == run / "pareto" / "trial_0001.onnx"

    # status counted against the first run's n_trials: "2/1 finished"
    status = subprocess.run([sys.executable, "-m", "onnxopt", "status", str(run), "--json"],
                            capture_output=True, text=True)  # fmt: skip
    state = json.loads(status.stdout)
    assert state["n_trials"] == 2 and state["finished"] == 2 and state["done"]


def test_resuming_a_finished_study_with_two_workers_starts_no_worker(config, tmp_path):
    path, run = config(TWO_POINTS), tmp_path / "run"
    assert _search(path, run, "--no-export").returncode == 0
    start = time.monotonic()
    done = _search(path, run, "--resume", "--workers", "2", "--no-export")
    assert done.returncode == 0, done.stderr
    assert not (run / "workers").exists()  # nothing left to do: no child was started
    assert time.monotonic() - start < 60


def test_sweep_removes_only_the_temporaries_of_dead_writers(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".report.json.p{dead.pid}.abc123.tmp"
    stale.write_text("half")
    stale_dir = tmp_path / f".pareto.p{dead.pid}.xyz789.tmp"
    stale_dir.mkdir()
    (stale_dir / "trial_0000.onnx").write_bytes(b"half")
    with atomic_path(tmp_path / "live.json") as live:  # this process's, still being written
        live.write_text("{}")
        removed = sweep_stale(tmp_path)
        assert live.exists()
    assert sorted(removed) == sorted([stale, stale_dir])
    assert not stale.exists() and not stale_dir.exists()
    assert (tmp_path / "live.json").read_text() == "{}"


def test_a_kill_during_the_export_leaves_no_hidden_files(config, tmp_path):
    body = TWO_POINTS.replace("n_trials = 1", "n_trials = 2").replace("min_time_s = 0",
                                                                      "min_time_s = 0.3")
    path, run = config(body.replace('[search.metrics.accuracy]', '[search.metrics.accuracy]\n'
                                    '[search.metrics.size]')), tmp_path / "run"  # fmt: skip
    cmd = [sys.executable, "-m", "onnxopt", "search", str(path), "--run-dir", str(run),
           "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if list(run.glob(".pareto.p*.tmp")):  # the export is writing its files
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail("the search ended before the export could be interrupted")
    assert list(run.rglob(".*.tmp"))  # what the kill left
    done = _search(path, run, "--resume")
    assert done.returncode == 0, done.stderr
    assert not list(run.rglob(".*.tmp")), list(run.rglob(".*.tmp"))
    assert (run / "pareto").is_dir() and list((run / "pareto").glob("*.onnx"))
