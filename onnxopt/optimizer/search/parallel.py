"""Worker processes for ``onnxopt search --workers N``.

The process that opened the study runs one worker itself and starts ``N - 1`` more as
``python -m onnxopt search-worker`` on the same storage; each loads the config from the
study, so all of them search the same space on the same data. Their output goes to
``RUN_DIR/workers/worker-<i>.log``. While it runs trials, worker ``i`` is bound to its own
cores (:func:`pinned`) when the machine has enough for every worker's threads.

An interpreter importing onnx, onnxruntime, Optuna and onnx_ir takes 1.5-2 s, a large part of
a short search. So the ``search`` command starts the interpreters it will need as soon as
it reads ``workers`` (:func:`standby`): each imports what a worker needs while the command
loads the config, trains or loads the model and opens the study, then waits for its
``search-worker`` arguments (:func:`spawn_workers` hands them over) or for the command to
end without it (it exits, having written nothing).
"""

from __future__ import annotations

import contextlib
import json
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
        args = ["search-worker", str(run_dir), "--storage", storage, "--study", study_name,
                "--index", str(index)]  # fmt: skip
        log = logs / f"worker-{index}.log"
        proc = _hand_over(args, log)
        if proc is None:
            with open(log, "wb") as out:
                cmd = [sys.executable, "-m", "onnxopt", *args]
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
    return procs


_STANDBY: list[subprocess.Popen] = []
"""Interpreters started by :func:`standby`, not yet handed a worker's arguments."""

_STANDBY_CODE = "from onnxopt.optimizer.search.parallel import _standby_main; _standby_main()"


@contextlib.contextmanager
def standby(n: int) -> Iterator[None]:
    """While the block runs, ``n`` interpreters import what a worker needs and wait for
    :func:`spawn_workers`; those it did not use are stopped when the block ends."""
    started = [
        subprocess.Popen([sys.executable, "-c", _STANDBY_CODE], stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        for _ in range(max(n, 0))
    ]
    _STANDBY.extend(started)
    try:
        yield
    finally:
        unused = [p for p in started if p in _STANDBY]
        for p in unused:
            _STANDBY.remove(p)
            p.terminate()  # it writes nothing: stopping it mid-import loses nothing
        for p in unused:
            p.wait()


def _hand_over(args: list[str], log: Path) -> subprocess.Popen | None:
    """A standby interpreter now running the worker command ``args`` with its output in
    ``log`` (None when none is left, or the one left has died)."""
    while _STANDBY:
        proc = _STANDBY.pop(0)
        try:
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"args": args, "log": str(log)}).encode() + b"\n")
            proc.stdin.close()
        except OSError:  # it died (killed, or its imports failed): try the next one
            proc.wait()
            continue
        return proc
    return None


def _standby_main() -> None:
    """A standby interpreter: import, then run the worker command it is handed (or exit
    when the search ends without handing it one)."""
    from onnxopt.runtime.contained import warm_up

    warm_up()  # first: its probes' server imports beside this interpreter's imports

    import onnxruntime  # noqa: F401  (what a worker needs, imported now)
    import threadpoolctl  # noqa: F401

    import onnxopt.cli
    import onnxopt.exporters.prepare  # noqa: F401
    import onnxopt.optimizer.search.journal  # noqa: F401
    import onnxopt.optimizer.search.run  # noqa: F401

    line = sys.stdin.buffer.readline()
    if not line:
        return
    job = json.loads(line)
    fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    onnxopt.cli.main(job["args"], prog_name="onnxopt")  # exits with the command's code


def configured_workers(path: Path) -> int:
    """``search.strategy.workers`` of a config file, read cheaply (1 when it cannot be
    read: the config is checked properly later)."""
    import tomllib

    try:
        value = tomllib.loads(Path(path).read_text())["search"]["strategy"]["workers"]
    except (OSError, ValueError, KeyError, TypeError):
        return 1
    return value if isinstance(value, int) and 1 <= value <= 64 else 1


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
