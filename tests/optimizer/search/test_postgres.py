"""Two workers with their own run directories (as on two machines) share one PostgreSQL study.

Needs a server: ``ONNXOPT_TEST_POSTGRES_URL=postgresql://user:pw@host:port/db``
(``.ci/postgres.sh COMMAND`` starts a throwaway one; ``.ci/run`` uses it). Without the URL
the test skips, except under ``CI`` where it fails, so CI cannot skip it silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from onnxopt.config.search import load_search_config
from onnxopt.errors import UsageError
from onnxopt.optimizer.search.run import run_search
from onnxopt.optimizer.search.study import is_interrupted, load_study, open_storage
from tests.optimizer.search.test_workers import (
    CHEAP,
    _fixed_list,
    _layer_names,
    by_name_space,
    enqueue_toml,
)

URL_VAR = "ONNXOPT_TEST_POSTGRES_URL"
METRICS = ("accuracy", "loss", "size", "average_bitwidth")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture
def postgres_url() -> str:
    url = os.environ.get(URL_VAR)
    if not url:
        if _in_ci():
            pytest.fail(
                f"CI is set but {URL_VAR} is not: run the tests through .ci/postgres.sh "
                "(.ci/run does) so the PostgreSQL test runs instead of skipping"
            )
        pytest.skip(f"{URL_VAR} not set (.ci/postgres.sh COMMAND starts a throwaway server)")
    return url


@pytest.fixture
def study_name(postgres_url):
    """A name no other run uses; the study is dropped afterwards."""
    name = f"onnxopt-test-{uuid.uuid4().hex[:12]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=open_storage(postgres_url))
    except KeyError:
        pass  # the workers failed before creating it


def _results(trials) -> dict:
    return {
        tuple(sorted(t.params.items())): {k: t.user_attrs["metrics"][k] for k in METRICS}
        for t in trials
    }


def test_two_workers_on_postgres_match_one_worker_on_a_journal(
    write_config, exported_recipe, tmp_path, postgres_url, study_name
):
    layers = _layer_names(exported_recipe)
    points = _fixed_list(layers)
    # trials of at least 0.25 s: the eight points outlast the second machine's start
    body = by_name_space(layers) + CHEAP.replace("min_time_s = 0", "min_time_s = 0.25") + f"""
[search.strategy]
sampler = "random"
n_trials = {len(points)}
{enqueue_toml(points)}"""  # fmt: skip
    path = write_config(body)
    cmd = [sys.executable, "-m", "onnxopt", "search", str(path), "--storage", postgres_url,
           "--study", study_name, "--no-progress", "--no-export"]  # fmt: skip
    workers = [
        subprocess.Popen(
            [*cmd, "--run-dir", str(tmp_path / f"machine-{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for i in (1, 2)
    ]
    # the reference run, on a journal, while the workers run
    one = run_search(load_search_config(path), run_dir=tmp_path / "one", progress=False)
    for i, worker in enumerate(workers, start=1):
        out, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, f"worker {i}:\n{out.decode()[-3000:]}"

    trials = load_study(postgres_url, study_name).trials
    assert len(trials) == len(points)
    assert all(t.state is TrialState.COMPLETE for t in trials)
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(points), "a parameter set ran twice"
    assert set(params) == {tuple(sorted(p.items())) for p in points}
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "one worker ran every trial"
    assert _results(trials) == _results(one.study.trials)


CTL_VAR = "ONNXOPT_TEST_POSTGRES_CTL"
SLOW = """
[search.evaluation]
batch_sizes = [1]
warmup = 1
repeats = 3
min_time_s = 0.1
"""


@pytest.fixture
def server(postgres_url):
    """``server("stop" | "start" | "kill")`` on the test server (.ci/postgres.sh's ctl script);
    the server runs again after the test."""
    ctl = os.environ.get(CTL_VAR)
    if not ctl:
        if _in_ci():
            pytest.fail(f"CI is set but {CTL_VAR} is not: run the tests through .ci/postgres.sh")
        pytest.skip(f"{CTL_VAR} not set (.ci/postgres.sh COMMAND sets it)")

    def do(action: str) -> None:
        done = subprocess.run([ctl, action], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"ctl {action}: {done.stdout}{done.stderr}"

    yield do
    subprocess.run([ctl, "start"], capture_output=True, timeout=120)  # fails when it runs


def _search(path, url, name, run_dir, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "onnxopt", "search", str(path), "--storage", url, "--study",
           name, "--run-dir", str(run_dir), "--no-progress", "--no-export", *extra]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_complete(url, name, count, proc, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            trials = load_study(url, name).trials
        except UsageError:  # the study is still being created
            trials = []
        if sum(t.state is TrialState.COMPLETE for t in trials) >= count:
            return
        time.sleep(0.05)
    pytest.fail("the search did not get going")


def _check_exact(url, name, n_trials) -> None:
    trials = load_study(url, name).trials
    assert not [t.number for t in trials if t.state is TrialState.RUNNING], "a trial is RUNNING"
    assert all(is_interrupted(t) for t in trials if t.state is TrialState.FAIL)
    assert sum(t.state is TrialState.COMPLETE for t in trials) == n_trials


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_server_restart_under_a_two_worker_search_loses_nothing(
    write_config, exported_recipe, tmp_path, postgres_url, study_name, server, how
):
    """pg_ctl stop -m fast (or a killed postmaster) and a start while two workers run: they
    wait for the server (retries with backoff) and the search ends with exactly n_trials."""
    n_trials = 24
    body = by_name_space(_layer_names(exported_recipe)) + SLOW + f"""
[search.strategy]
sampler = "random"
n_trials = {n_trials}
workers = 2
"""  # fmt: skip
    proc = _search(write_config(body), postgres_url, study_name, tmp_path / "run")
    _wait_for_complete(postgres_url, study_name, 4, proc)
    server(how)
    time.sleep(2)
    server("start")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    _check_exact(postgres_url, study_name, n_trials)


def test_a_server_that_stays_away_fails_the_worker_with_one_line_then_resume_continues(
    write_config, exported_recipe, tmp_path, postgres_url, study_name, server
):
    n_trials = 12
    body = by_name_space(_layer_names(exported_recipe)) + SLOW + f"""
[search.storage]
retry_s = 2
[search.strategy]
sampler = "random"
n_trials = {n_trials}
"""  # fmt: skip
    path = write_config(body)
    proc = _search(path, postgres_url, study_name, tmp_path / "run")
    _wait_for_complete(postgres_url, study_name, 3, proc)
    server("stop")
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        server("start")
    lines = err.strip().splitlines()
    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert lines[-1].startswith("error: lost the study storage postgresql://"), err[-3000:]
    assert "retried for 2 s" in lines[-1] and "--resume" in lines[-1]
    assert "***" in lines[-1] or "@" not in lines[-1].split("postgresql://")[1].split(" ")[0]
    resumed = _search(path, postgres_url, study_name, tmp_path / "run", "--resume")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    _check_exact(postgres_url, study_name, n_trials)


def test_the_database_password_is_written_to_no_file(
    write_config, tmp_path, postgres_url, study_name
):
    """A search on PostgreSQL (with its exports, report and manifest) and ``status`` leave
    the password in no file; the manifest names the storage without it."""
    from sqlalchemy.engine import make_url

    password = make_url(postgres_url).password
    assert password, "the test server's URL carries a password"
    space = "[search.quantization.by_type.linear]\nweight_width = [4, 8]\n"
    path = write_config(space + CHEAP + '[search.strategy]\nsampler = "random"\nn_trials = 2\n')
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "onnxopt", "search", str(path), "--storage", postgres_url,
           "--study", study_name, "--run-dir", str(run), "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    status = subprocess.run(
        [sys.executable, "-m", "onnxopt", "status", postgres_url, "--study", study_name],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files)
    leaked = [str(p) for p in files if password.encode() in p.read_bytes()]
    assert leaked == []
    assert password not in done.stdout + done.stderr + status.stdout + status.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert make_url(manifest["study_storage"]).password in (None, "***")
