"""Two workers with their own run directories (as on two machines) share one PostgreSQL study.

Needs a server: ``ONNXOPT_TEST_POSTGRES_URL=postgresql://user:pw@host:port/db``
(``.ci/postgres.sh COMMAND`` starts a throwaway one; ``.ci/run`` uses it). Without the URL
the test skips, except under ``CI`` where it fails, so CI cannot skip it silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from onnxopt.config.search import load_search_config
from onnxopt.optimizer.search.run import run_search
from onnxopt.optimizer.search.study import load_study, open_storage
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
    body = by_name_space(layers) + CHEAP + f"""
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
