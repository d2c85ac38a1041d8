"""SIGTERM (``kill``, ``docker stop``) stops a search like Ctrl-C: no trial is left RUNNING."""

from __future__ import annotations

import signal
import time

import pytest
from optuna.trial import TrialState

from tests.optimizer.search.test_resume import SLOW_TRIALS, _start, _trials


def test_sigterm_fails_the_running_trial_as_interrupted_and_queues_it(write_config, tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(write_config(SLOW_TRIALS), run_dir)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        trials = _trials(run_dir)
        busy = [t for t in trials if t.state is TrialState.RUNNING and "config" in t.user_attrs]
        if busy:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail(f"the search did not get going: {proc.stderr.read().decode()[-2000:]}")
    assert proc.wait(timeout=30) != 0
    trials = _trials(run_dir)
    assert not [t for t in trials if t.state is TrialState.RUNNING]
    (stopped,) = [t for t in trials if t.user_attrs.get("interrupted")]
    assert stopped.state is TrialState.FAIL and stopped.user_attrs["fail_reason"] == "interrupted"
    waiting = [t for t in trials if t.state is TrialState.WAITING]
    # queued for the next run (Optuna keeps an enqueued point in system attrs until it runs),
    # beside the obvious points (strategy.enqueue_obvious) the search had not reached yet
    queued = [t.system_attrs["fixed_params"] for t in waiting]
    assert queued.count(stopped.params) == 1 and len(queued) <= 2
