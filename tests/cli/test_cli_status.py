"""`onnxopt status` and `onnxopt dashboard` on a small finished search."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from onnxopt.config.search import load_search_config
from onnxopt.optimizer.search.run import run_search
from onnxopt.optimizer.search.study import (
    JOURNAL_FILE,
    STUDY_NAME,
    WORKER,
    load_study,
    mark_interrupted,
    open_storage,
    this_worker,
)

N_TRIALS = 5
SEARCH = f"""
[data]
dataset = "digits"
[search.quantization.by_type.linear]
data_in_width = [4, 8]
weight_width = [2, 4, 8]
[search.evaluation]
batch_sizes = [1]
warmup = 1
repeats = 3
min_time_s = 0
[search.strategy]
sampler = "brute-force"
n_trials = {N_TRIALS}
[search.metrics.accuracy]
[search.metrics.size]
"""


@pytest.fixture(scope="module")
def run_dir(exported_recipe, tmp_path_factory):
    """A finished 5-trial search (journal storage), run once for the module."""
    folder = tmp_path_factory.mktemp("status")
    config = folder / "s.toml"
    config.write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{SEARCH}')
    run_search(load_search_config(config), run_dir=folder / "run", progress=False)
    return folder / "run"


def _front_by_hand(trials) -> list[int]:
    """The (accuracy up, size down) front, sorted the plain way: by size, then keep each
    trial more accurate than every smaller one (the first of equal points)."""
    done = [t for t in trials if t.values is not None]
    done.sort(key=lambda t: (t.values[1], -t.values[0], t.number))
    front, best_accuracy = [], -1.0
    for t in done:
        if t.values[0] > best_accuracy:
            front.append(t.number)
            best_accuracy = t.values[0]
    assert len(front) < len(done)  # some trial is dominated: the front is not everything
    return sorted(front)


def test_status_shows_progress_baseline_and_pareto_set(run_dir):
    result = CliRunner().invoke(main, ["status", str(run_dir)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"study '{STUDY_NAME}'" in out and ": done" in out
    assert f"trials: {N_TRIALS}/{N_TRIALS} finished ({N_TRIALS} complete" in out
    assert "0 running, 0 waiting; 0 interrupted" in out
    assert "workers seen: 1" in out
    assert "fp32 baseline (validation): accuracy 0.9" in out
    assert "Pareto set (feasible, by accuracy, size):" in out
    table = re.sub(" +", " ", out.split("Pareto set")[1])
    assert "| | number | software_metrics | hardware_metrics | scaled_metrics |" in table
    front = _front_by_hand(load_study(str(run_dir / JOURNAL_FILE)).trials)
    assert [int(r.split("|")[2]) for r in table.splitlines()[3:]] == front


def test_status_json_matches_the_study(run_dir):
    result = CliRunner().invoke(main, ["status", str(run_dir / JOURNAL_FILE), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    study = load_study(str(run_dir / JOURNAL_FILE))
    front = _front_by_hand(study.trials)
    assert [b["number"] for b in status["best"]] == front
    assert status["best"][0]["params"] == study.trials[front[0]].params
    assert status["n_trials"] == status["finished"] == N_TRIALS and status["done"]
    assert status["counts"]["complete"] == N_TRIALS
    assert status["baseline"] == study.user_attrs["baseline"]
    assert status["objectives"] == ["accuracy", "size"]
    (worker,) = status["workers"]
    assert worker["finished"] == N_TRIALS and worker["host"] == socket.gethostname()
    assert worker["alive"] is True  # the search ran in this test process


def test_status_counts_running_and_interrupted_trials(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    study = load_study(str(copy / JOURNAL_FILE), read_only=False)
    running = study.ask()
    running.set_user_attr(WORKER, this_worker())
    killed = study.ask()
    mark_interrupted(study, open_storage(str(copy / JOURNAL_FILE)), killed.number, {})
    status = json.loads(CliRunner().invoke(main, ["status", str(copy), "--json"]).output)
    assert status["counts"]["running"] == 1 and status["counts"]["interrupted"] == 1
    assert status["finished"] == N_TRIALS and not status["done"]
    assert status["workers"][0]["running"] == 1
    text = CliRunner().invoke(main, ["status", str(copy)]).output
    assert ": in progress" in text and "1 running" in text and "1 interrupted" in text


@pytest.mark.parametrize("command", ["status", "dashboard"])
def test_missing_study_is_a_usage_error(run_dir, tmp_path, command):
    result = CliRunner().invoke(main, [command, str(run_dir), "--study", "nope"])
    assert result.exit_code == 2
    assert f"no search named 'nope' in {run_dir / JOURNAL_FILE}" in result.output
    assert f"(it holds {STUDY_NAME})" in result.output
    result = CliRunner().invoke(main, [command, str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "neither a run directory, a journal file nor a storage URL" in result.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_dashboard_serves_the_study(run_dir):
    port = _free_port()
    cmd = [sys.executable, "-m", "onnxopt", "dashboard", str(run_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        listed = _get_json(f"http://127.0.0.1:{port}/api/studies", timeout=30)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    names = [s["study_name"] for s in listed["study_summaries"]]
    assert names == [STUDY_NAME]
    assert f"http://127.0.0.1:{port}/dashboard/studies/0" in out.decode()
    assert "warning" not in out.decode()


def test_dashboard_listens_on_loopback_unless_told(run_dir, monkeypatch):
    import optuna_dashboard

    calls = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda s, **kw: calls.append(kw))
    result = CliRunner().invoke(main, ["dashboard", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert calls[-1] == {"host": "127.0.0.1", "port": 8080}
    assert "warning" not in result.output
    result = CliRunner().invoke(main, ["dashboard", str(run_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert calls[-1]["host"] == "0.0.0.0"
    assert result.output.startswith("warning: the dashboard listens on 0.0.0.0:8080, not on ")


def test_dashboard_port_in_use_is_a_usage_error(run_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["dashboard", str(run_dir), "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
