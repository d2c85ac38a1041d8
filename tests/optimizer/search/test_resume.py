"""Killed searches resume with every finished trial; interrupted trials run again."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from optuna.trial import TrialState

from onnxopt.config.search import load_search_config
from onnxopt.errors import UsageError
from onnxopt.optimizer.search.run import run_search
from onnxopt.optimizer.search.study import JOURNAL_FILE, is_interrupted, load_study
from tests.optimizer.search.conftest import QUANT_18

SLOW_TRIALS = (
    QUANT_18
    + """
[search.strategy]
sampler = "random"
n_trials = 12
[search.evaluation]
min_time_s = 0.1
"""
)


def _start(config_path, run_dir, *extra) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "onnxopt", "search", str(config_path), "--run-dir",
           str(run_dir), "--no-progress", "--no-export", *extra]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _trials(run_dir):
    if not (run_dir / JOURNAL_FILE).is_file():
        return []
    try:
        return load_study(str(run_dir / JOURNAL_FILE)).get_trials(deepcopy=False)
    except Exception:  # the study is still being created
        return []


def _has_study(run_dir) -> bool:
    try:
        load_study(str(run_dir / JOURNAL_FILE))
    except UsageError:
        return False
    return True


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_mid_trial_then_resume_keeps_finished_trials(write_config, tmp_path):
    config_path = write_config(SLOW_TRIALS)
    run_dir = tmp_path / "run"
    proc = _start(config_path, run_dir)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        trials = _trials(run_dir)
        done = [t for t in trials if t.state is TrialState.COMPLETE]
        # a trial whose candidate is built and being measured (each takes >= 0.2 s)
        busy = [t for t in trials if t.state is TrialState.RUNNING and "config" in t.user_attrs]
        if len(done) >= 3 and busy:
            _kill(proc)
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail(f"the search did not get going: {proc.stderr.read().decode()[-2000:]}")
    before = _trials(run_dir)
    finished = {t.number: t.params for t in before if t.state is TrialState.COMPLETE}
    running = [t for t in before if t.state is TrialState.RUNNING]
    assert 3 <= len(finished) < 12 and len(running) == 1  # killed in the middle of a trial

    result = run_search(load_search_config(config_path), run_dir=run_dir, resume=True,
                        progress=False)  # fmt: skip
    trials = result.study.trials
    assert result.recovered == 1
    killed = trials[running[0].number]
    assert killed.state is TrialState.FAIL and is_interrupted(killed)
    rerun = [t for t in trials if t.number > killed.number and t.params == killed.params]
    assert rerun and rerun[0].state is TrialState.COMPLETE  # its point was queued again
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    assert len(complete) == 12
    assert {t.number: t.params for t in complete if t.number in finished} == finished


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_completes(write_config, tmp_path):
    """Kills land anywhere: start-up, study creation, a trial, a write to the journal."""
    config_path = write_config(SLOW_TRIALS)
    run_dir = tmp_path / "run"
    rng = random.Random(8)
    seen: dict[int, dict] = {}
    for _ in range(3):
        # --resume once the study exists: before that, a resume finds nothing and says so
        extra = ("--resume",) if _has_study(run_dir) else ()
        proc = _start(config_path, run_dir, *extra)
        time.sleep(rng.uniform(0.3, 3.5))
        _kill(proc)
        now = {t.number: t.params for t in _trials(run_dir) if t.state is TrialState.COMPLETE}
        assert now.items() >= seen.items(), "a finished trial was lost"
        seen = now
    final = _start(config_path, run_dir, *(("--resume",) if _has_study(run_dir) else ()))
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()[-2000:]
    trials = _trials(run_dir)
    complete = {t.number: t.params for t in trials if t.state is TrialState.COMPLETE}
    assert len(complete) == 12 and complete.items() >= seen.items()
    assert all(t.state.is_finished() for t in trials)


def test_unwritable_run_dir_is_refused_before_any_work(write_config, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match="is not writable.*choose another --run-dir"):
        run_search(load_search_config(write_config(SLOW_TRIALS)), run_dir=blocker / "run",
                   progress=False)  # fmt: skip


def test_full_disk_is_refused_before_any_work(write_config, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 2**20, 2**20))
    with pytest.raises(UsageError, match=r"only 1 MiB free .* free some space"):
        run_search(load_search_config(write_config(SLOW_TRIALS)), run_dir=tmp_path / "run",
                   progress=False)  # fmt: skip
    assert not (tmp_path / "run" / JOURNAL_FILE).exists()


def test_trials_of_other_hosts_are_reclaimed_only_when_asked(write_config, tmp_path):
    """A RUNNING trial of a worker on another host (or an untagged one) and --reclaim."""
    config = load_search_config(write_config(SLOW_TRIALS.replace("n_trials = 12", "n_trials = 2")))
    run_dir = tmp_path / "run"
    space = run_search(config, run_dir=run_dir, progress=False).context.space
    study = load_study(str(run_dir / JOURNAL_FILE), read_only=False)
    foreign = study.ask()
    foreign.set_user_attr("worker", "another-host:123:1.000")
    space.suggest(foreign)
    params = dict(foreign.params)
    untagged = study.ask()  # as if killed between ask and tagging
    more = config.search.strategy.model_copy(update={"n_trials": 4})
    config = config.model_copy(
        update={"search": config.search.model_copy(update={"strategy": more})}
    )
    result = run_search(config, run_dir=run_dir, resume=True, progress=False)
    assert result.recovered == 1  # the untagged one; the other host's may still be running
    assert result.study.trials[foreign.number].state is TrialState.RUNNING
    assert result.study.trials[untagged.number].state is TrialState.FAIL
    result = run_search(config, run_dir=run_dir, resume=True, reclaim=True, progress=False)
    assert result.recovered == 1
    assert is_interrupted(result.study.trials[foreign.number])
    rerun = [t for t in result.study.trials if t.number > foreign.number and t.params == params]
    assert rerun and rerun[0].state is TrialState.COMPLETE
