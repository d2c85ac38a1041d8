"""Several workers on one study: exact trial counts, no duplicates, same results."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from optuna.trial import TrialState

from onnxopt.config.search import load_search_config
from onnxopt.data import load_dataset
from onnxopt.errors import UsageError
from onnxopt.optimizer.search.run import run_search
from onnxopt.optimizer.search.study import JOURNAL_FILE, finished_trials, load_study

LAYERS = ("node_linear", "node_linear_1", "node_linear_2")
CHEAP = """
[search.evaluation]
batch_sizes = [1]
warmup = 1
repeats = 3
min_time_s = 0
"""


def by_name_space(layers=LAYERS) -> str:
    """3 layers x data_in 4/8 x weight 2/4/8 = 216 points."""
    body = ""
    for name in layers:
        body += f"""
[search.quantization.by_name.{name}]
data_in_width = [4, 8]
weight_width = [2, 4, 8]
"""
    return body


def _layer_names(exported_recipe):
    model = onnx.load(exported_recipe("digits-mlp"))
    return tuple(n.name for n in model.graph.node if n.op_type in ("Gemm", "MatMul"))


def test_two_local_workers_brute_force_exactly_n_trials(write_config, exported_recipe, tmp_path):
    layers = _layer_names(exported_recipe)
    assert len(layers) == 3, layers
    body = (
        by_name_space(layers)
        # each trial timed for 30 ms at least: the first worker alone would otherwise finish
        # the 200 points before the second has started (an interpreter start and the data)
        + CHEAP.replace("min_time_s = 0", "min_time_s = 0.03")
        + """
[search.strategy]
sampler = "brute-force"
n_trials = 200
workers = 2
"""
    )
    config = load_search_config(write_config(body))
    result = run_search(config, run_dir=tmp_path / "run", progress=False)
    trials = result.study.trials
    finished = finished_trials(result.study)
    assert len(finished) == len(trials) == 200
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == 200  # no point visited twice
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2  # both processes ran trials
    assert all(t.state is TrialState.COMPLETE for t in trials)
    assert all("latency" in t.user_attrs["metrics"] for t in trials)
    log = (tmp_path / "run" / "workers" / "worker-1.log").read_text()
    assert "worker 1:" in log


def _fixed_list(layers) -> list[dict]:
    points = []
    for w in itertools.islice(itertools.product([2, 4, 8], repeat=3), 8):
        point = {}
        for name, width in zip(layers, w, strict=True):
            point[f"q.by_name.{name}.weight_width"] = width
            point[f"q.by_name.{name}.data_in_width"] = 8
        points.append(point)
    return points


def enqueue_toml(points) -> str:
    rows = ", ".join("{" + ", ".join(f'"{k}" = {v}' for k, v in p.items()) + "}" for p in points)
    return f"enqueue = [{rows}]\n"


def test_two_workers_match_one_worker_on_enqueued_trials(write_config, exported_recipe, tmp_path):
    layers = _layer_names(exported_recipe)
    points = _fixed_list(layers)
    body = (
        by_name_space(layers)
        + CHEAP
        + f"""
[search.strategy]
sampler = "random"
n_trials = {len(points)}
{enqueue_toml(points)}"""
    )
    path = write_config(body)
    one = run_search(load_search_config(path), run_dir=tmp_path / "one", progress=False)
    two = run_search(load_search_config(path, workers=2), run_dir=tmp_path / "two",
                     progress=False)  # fmt: skip

    def results(study):
        keys = ("accuracy", "loss", "size", "average_bitwidth")
        return {
            tuple(sorted(t.params.items())): {k: t.user_attrs["metrics"][k] for k in keys}
            for t in study.trials
        }

    assert len(two.study.trials) == len(one.study.trials) == len(points)
    assert results(two.study) == results(one.study)
    assert {tuple(sorted(p.items())) for p in points} == set(results(one.study))


def test_worker_joins_an_existing_study_by_name(write_config, exported_recipe, tmp_path):
    """`--study NAME` on the same storage joins instead of refusing, up to n_trials."""
    body = (
        by_name_space(_layer_names(exported_recipe))
        + CHEAP
        + """
[search.strategy]
sampler = "random"
n_trials = 6
"""
    )
    path = write_config(body)
    journal = tmp_path / "shared.journal"
    cmd = [sys.executable, "-m", "onnxopt", "search", str(path), "--storage", str(journal),
           "--study", "shared", "--no-progress", "--no-export"]  # fmt: skip
    first = subprocess.run([*cmd, "--run-dir", str(tmp_path / "a")], capture_output=True)
    assert first.returncode == 0, first.stderr.decode()[-2000:]
    second = subprocess.run([*cmd, "--run-dir", str(tmp_path / "b"), "--n-trials", "9"],
                            capture_output=True)  # fmt: skip
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    study = load_study(str(journal), "shared")
    assert len(study.trials) == 9  # the second worker ran the missing 3
    assert not (tmp_path / "a" / JOURNAL_FILE).exists()


def _shared_study(write_config, exported_recipe, tmp_path):
    """A finished 1-trial study named ``s`` on a shared journal; returns (config, body, journal)."""
    body = by_name_space(_layer_names(exported_recipe)) + CHEAP
    body += '[search.strategy]\nsampler = "random"\nn_trials = 1\n'
    path = write_config(body)
    journal = str(tmp_path / "shared.journal")
    run_search(load_search_config(path), run_dir=tmp_path / "a", storage=journal,
               study_name="s", progress=False)  # fmt: skip
    return path, body, journal


def _join(config_path, journal, run_dir):
    return run_search(load_search_config(config_path), run_dir=run_dir, storage=journal,
                      study_name="s", progress=False)  # fmt: skip


def test_joining_with_another_space_or_model_is_refused(write_config, exported_recipe, tmp_path):
    path, body, journal = _shared_study(write_config, exported_recipe, tmp_path)
    other_space = write_config(body.replace("weight_width = [2, 4, 8]", "weight_width = [4, 8]"),
                               name="other.toml")  # fmt: skip
    with pytest.raises(UsageError, match="search space differs"):
        _join(other_space, journal, tmp_path / "b")
    model = onnx.load(exported_recipe("digits-mlp"))
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.01),
                                            weight.name))  # fmt: skip
    onnx.save(model, tmp_path / "changed.onnx")
    changed = tmp_path / "changed.toml"
    changed.write_text(path.read_text().replace(str(exported_recipe("digits-mlp")),
                                                str(tmp_path / "changed.onnx")))  # fmt: skip
    with pytest.raises(UsageError, match="base model differs"):
        _join(changed, journal, tmp_path / "c")


def test_joining_with_other_data_is_refused(write_config, exported_recipe, tmp_path):
    path, _, journal = _shared_study(write_config, exported_recipe, tmp_path)
    d = load_dataset("digits")
    np.savez(tmp_path / "other.npz", x_train=d.train.x, y_train=d.train.y, x_val=d.val.x[::-1],
             y_val=d.val.y[::-1], x_test=d.test.x, y_test=d.test.y)  # fmt: skip
    other = tmp_path / "other.toml"
    other.write_text(path.read_text().replace('dataset = "digits"', 'dataset = "other.npz"'))
    with pytest.raises(UsageError, match="the data differ from the stored study's"):
        _join(other, journal, tmp_path / "b")


def test_each_worker_is_bound_to_its_own_core_while_it_runs_trials():
    """`pinned` binds worker i to the i-th allowed core when every worker's threads get a
    core of their own, restores the binding after, and binds nothing otherwise."""
    import os

    from onnxopt.optimizer.search.parallel import pinned

    allowed = sorted(os.sched_getaffinity(0))
    with pinned(0, 1, 1) as cores:  # one worker: the kernel shares the cores as usual
        assert cores == () and sorted(os.sched_getaffinity(0)) == allowed
    with pinned(0, len(allowed) + 1, 1) as cores:  # more workers than cores
        assert cores == () and sorted(os.sched_getaffinity(0)) == allowed
    if len(allowed) < 2:
        return  # a one-core machine binds nothing for two workers (checked above)
    for index in (0, 1):
        with pinned(index, 2, 1) as cores:
            assert cores == (allowed[index],)
            assert os.sched_getaffinity(0) == {allowed[index]}
        assert sorted(os.sched_getaffinity(0)) == allowed
    with pinned(1, 2, len(allowed) // 2) as cores:  # threads: a block of cores each
        half = len(allowed) // 2
        assert cores == tuple(allowed[half : 2 * half])


@pytest.mark.parametrize(
    ("metrics", "constraints", "decides"),
    [
        ("[search.metrics.accuracy]\n[search.metrics.size]\n", "", False),
        ("[search.metrics.accuracy]\n[search.metrics.latency]\n", "", True),
        ("[search.metrics.accuracy]\n[search.metrics.latency_b1]\n", "", True),
        ("[search.metrics.accuracy]\n", "[search.constraints]\nmax_latency_ms = 5.0\n", True),
    ],
)
def test_latency_is_timed_one_worker_at_a_time_only_where_it_decides(
    write_config, metrics, constraints, decides
):
    body = by_name_space() + CHEAP.replace("[1]", "[1, 8]") + metrics + constraints
    assert load_search_config(write_config(body)).search.latency_decides is decides


def test_workers_start_before_the_study_and_a_refusal_leaves_nothing(
    write_config, exported_recipe, tmp_path
):
    """The workers of a new search start while the command still loads: a search refused
    meanwhile (a node the model lacks) stops them and leaves no run directory, logs or
    worker process behind; an accepted one has every worker join the study it makes."""
    import os
    import time

    before = os.sched_getaffinity(0)
    bad = write_config(
        "[search.quantization.by_name.no_such_node]\nweight_width = [4, 8]\n"
        "[search.strategy]\nn_trials = 4\nworkers = 2\n",
        name="bad.toml",
    )
    run = tmp_path / "refused"
    done = subprocess.run(
        [sys.executable, "-m", "onnxopt", "search", str(bad), "--run-dir", str(run)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "no node 'no_such_node'" in done.stderr
    assert not run.exists()
    time.sleep(0.5)
    workers = subprocess.run(["pgrep", "-f", f"search-worker {run}"], capture_output=True)
    assert workers.stdout == b"", "a worker outlived the refused search"
    standby = subprocess.run(["pgrep", "-f", "_standby_main"], capture_output=True)
    assert standby.stdout == b"", "a standby interpreter outlived the refused search"
    body = (
        by_name_space(_layer_names(exported_recipe))
        + CHEAP
        + '[search.strategy]\nsampler = "random"\nn_trials = 30\n'
    )
    config = load_search_config(write_config(body), workers=2)
    result = run_search(config, run_dir=tmp_path / "run", progress=False)
    assert len(result.study.trials) == 30
    assert "worker 1:" in (tmp_path / "run" / "workers" / "worker-1.log").read_text()
    assert os.sched_getaffinity(0) == before  # the search's own binding was undone


def test_a_standby_interpreter_runs_the_worker_command_it_is_handed(tmp_path):
    """``search`` starts its workers' interpreters early (:func:`parallel.standby`); the first
    one handed a command runs it with its output in the log, and one not handed any is
    stopped when the block ends."""
    from onnxopt.optimizer.search import parallel

    log = tmp_path / "worker-1.log"
    with parallel.standby(2):
        started = list(parallel._STANDBY)
        assert len(started) == 2
        proc = parallel._hand_over(["--version"], log)
        assert proc is started[0]
        assert proc.wait(timeout=120) == 0
    assert "onnxopt, version" in log.read_text()
    assert started[1].poll() is not None  # not needed: stopped, not left waiting
    assert parallel._STANDBY == []
    assert parallel._hand_over(["--version"], log) is None  # none left: spawn_workers starts one
