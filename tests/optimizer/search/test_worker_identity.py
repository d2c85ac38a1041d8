"""Worker identity in containers: workers on the host's network share the host's name and each
has its own pid namespace (the worker is pid 1 in each), so ``host:pid:start`` was the same
shape for all of them and a worker looking up another's pid in its own namespace took a live
worker for dead. The id now carries the pid namespace; a namespace this process cannot see
counts as another machine (None: cannot tell), never as dead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from onnxopt.optimizer.search.study import WorkerId, this_worker, worker_alive

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_ids_round_trip_and_old_ids_still_parse():
    me = WorkerId.parse(this_worker())
    assert me.pid == os.getpid() and me.pidns and str(me) == this_worker()
    old = WorkerId.parse("vm:14340:1764049537.123")  # a trial of an earlier onnxopt
    assert (old.host, old.pid, old.start, old.pidns) == ("vm", 14340, "1764049537.123", None)
    assert worker_alive(this_worker()) is True


def test_a_dead_worker_in_this_namespace_is_gone():
    code = "from onnxopt.optimizer.search.study import this_worker; print(this_worker())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": ROOT})  # fmt: skip
    assert worker_alive(proc.stdout.strip()) is False


def _in_new_pid_namespace() -> str:
    """The id of a worker in a pid namespace of its own (as in a container), or skip."""
    unshare = shutil.which("unshare")
    code = "from onnxopt.optimizer.search.study import this_worker; print(this_worker())"
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    proc = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT},
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {proc.stderr.strip()[:200]}")
    return proc.stdout.strip()


def test_a_worker_in_another_pid_namespace_is_never_taken_for_dead():
    other = _in_new_pid_namespace()
    who = WorkerId.parse(other)
    assert who.pid == 1 and who.pidns != WorkerId.parse(this_worker()).pidns
    assert who.host == WorkerId.parse(this_worker()).host  # the same host name
    # pid 1 runs here too (with another start time): the old check said False, "dead"
    assert worker_alive(other) is None
