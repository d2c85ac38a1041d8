"""Worker processes for ``onnxopt search --workers N``.

The process that opened the study runs one worker itself and starts ``N - 1`` more as
``python -m onnxopt search-worker`` on the same storage; each loads the config from the
study, so all of them search the same space on the same data. Their output goes to
``RUN_DIR/workers/worker-<i>.log``. While it runs trials, worker ``i`` is bound to its own
cores (:func:`pinned`) when the machine has enough for every worker's threads.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from onnxopt.errors import OnnxoptError

LOG_DIR = "workers"


def spawn_workers(n: int, run_dir: Path, storage: str, study_name: str) -> list[subprocess.Popen]:
    """Start ``n`` worker processes on ``storage`` (none when ``n`` is 0)."""
    if n <= 0:
        return []
    logs = Path(run_dir) / LOG_DIR
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for index in range(1, n + 1):
        cmd = [sys.executable, "-m", "onnxopt", "search-worker", str(run_dir),
               "--storage", storage, "--study", study_name, "--index", str(index)]  # fmt: skip
        with open(logs / f"worker-{index}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_workers(procs: list[subprocess.Popen]) -> None:
    """Wait for every worker.

    Raises:
        OnnxoptError: When a worker exited with an error (its log is named).
    """
    failed = [(i, p.wait()) for i, p in enumerate(procs, start=1)]
    failed = [(i, code) for i, code in failed if code != 0]
    if failed:
        i, code = failed[0]
        raise OnnxoptError(
            f"worker {i} failed (exit code {code}); see {LOG_DIR}/worker-{i}.log in the run "
            "directory, then run again with --resume"
        )


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """Terminate workers (their running trials are recovered by the next --resume)."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        p.wait()


@contextlib.contextmanager
def pinned(index: int, workers: int, threads: int) -> Iterator[tuple[int, ...]]:
    """Bind this process to worker ``index``'s own ``threads`` cores while the block runs.

    With one core per thread of every worker, the kernel would still move the workers'
    threads between cores and let two share one for a while; bound, each keeps its caches
    and the timings of one worker are not taken on a core another is using. Nothing is bound
    for one worker, or when the cores this process may use are too few (then the kernel
    shares them as usual). The previous binding is restored after the block.

    Yields:
        The cores bound to (empty when nothing was bound).
    """
    if workers <= 1 or not hasattr(os, "sched_setaffinity"):
        yield ()
        return
    allowed = sorted(os.sched_getaffinity(0))
    if workers * threads > len(allowed):
        yield ()
        return
    mine = tuple(allowed[index * threads : (index + 1) * threads])
    os.sched_setaffinity(0, mine)
    try:
        yield mine
    finally:
        os.sched_setaffinity(0, allowed)
