"""Storage writes per trial of a real search: journal fsyncs, database transactions.

Usage: python benchmarks/storage_writes.py [--trials 60] [--postgres URL]
    [--out benchmarks/results/storage_writes.json]

Runs the bundled ``configs/search-digits-cnn.toml`` search (channel multipliers and 4/8-bit
weights, NSGA-II; ``--trials`` of them, one worker, ``--no-export``) in this process on
each storage: the run directory's journal, a SQLite file and, with ``--postgres`` (or
``ONNXOPT_TEST_POSTGRES_URL``, which ``.ci/postgres.sh`` sets), a PostgreSQL database.
Counted in the trial window (first trial's start to last trial's end): ``os.fsync`` calls
(journal), and on the databases the committed transactions that wrote rows (an ``INSERT``,
``UPDATE`` or ``DELETE`` before the ``COMMIT``) and all committed transactions (reads
included: Optuna's RDBStorage opens and commits a session per call). Each storage runs once
with onnxopt's per-trial batching (:func:`onnxopt.optimizer.search.storage.write_batch`) and
once without it (every Optuna call its own fsync or transaction), for the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_common import git_state, machine_info, write_result
from workers_scaling import CONFIG, config_text, export_base

FSYNC_TARGET = 4.0
URL_VAR = "ONNXOPT_TEST_POSTGRES_URL"


class Counts:
    """Timestamps of fsyncs, of write transactions and of all transactions."""

    def __init__(self) -> None:
        self.fsyncs: list[float] = []
        self.writes: list[float] = []
        self.commits: list[float] = []
        self._wrote = False

    def statement(self, conn, cursor, statement, *args) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            self._wrote = True

    def commit(self, conn) -> None:
        now = time.time()
        self.commits.append(now)
        if self._wrote:
            self.writes.append(now)
        self._wrote = False

    def per_trial(self, start: float, end: float, trials: int) -> dict:
        def within(times: list[float]) -> float:
            return sum(start <= t <= end for t in times) / trials

        return {"fsyncs": within(self.fsyncs), "write_transactions": within(self.writes),
                "transactions": within(self.commits)}  # fmt: skip


@contextlib.contextmanager
def counting():
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts = Counts()
    real = os.fsync

    def fsync(fd):
        counts.fsyncs.append(time.time())
        return real(fd)

    os.fsync = fsync
    event.listen(Engine, "before_cursor_execute", counts.statement)
    event.listen(Engine, "commit", counts.commit)
    try:
        yield counts
    finally:
        os.fsync = real
        event.remove(Engine, "before_cursor_execute", counts.statement)
        event.remove(Engine, "commit", counts.commit)


@contextlib.contextmanager
def unbatched(off: bool):
    """onnxopt's per-trial batching turned off (``off``): every write on its own."""
    from onnxopt.optimizer.search import worker

    real = worker.write_batch
    if off:
        worker.write_batch = lambda storage, durable=True: contextlib.nullcontext()
    try:
        yield
    finally:
        worker.write_batch = real


def search(config_path: Path, run_dir: Path, storage: str | None, name: str) -> tuple:
    from onnxopt.config.search import load_search_config
    from onnxopt.optimizer.search.run import run_search

    config = load_search_config(config_path)
    result = run_search(config, run_dir=run_dir, storage=storage, study_name=name,
                        progress=False)  # fmt: skip
    trials = result.study.get_trials(deepcopy=False)
    start = min(t.datetime_start for t in trials).timestamp()
    end = max(t.datetime_complete for t in trials).timestamp()
    return trials, start, end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--postgres", default=os.environ.get(URL_VAR))
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/storage_writes.json"))  # fmt: skip
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="onnxopt-storage-") as tmp:
        folder = Path(tmp)
        base = export_base(folder)
        config = folder / "search.toml"
        config.write_text(config_text(base, "latency", args.trials, workers=1))
        storages = {"journal": None, "sqlite": "sqlite:///{dir}/study.db"}
        if args.postgres:
            storages["postgresql"] = args.postgres
        for label, spec in storages.items():
            for batched in (True, False):
                run_dir = folder / f"run-{label}-{batched}"
                run_dir.mkdir()
                url = None if spec is None else spec.format(dir=run_dir)
                name = f"onnxopt-bench-{uuid.uuid4().hex[:8]}"
                with counting() as counts, unbatched(not batched):
                    trials, start, end = search(config, run_dir, url, name)
                if label == "postgresql":
                    import optuna

                    from onnxopt.optimizer.search.storage import open_storage

                    optuna.delete_study(study_name=name, storage=open_storage(url))
                row = counts.per_trial(start, end, len(trials))
                row |= {"trials": len(trials), "trials_per_s": len(trials) / (end - start)}
                results.setdefault(label, {})["batched" if batched else "unbatched"] = row
                print(f"{label:>10} {'batched' if batched else 'unbatched':>9}: "
                      f"{row['fsyncs']:.1f} fsyncs, {row['write_transactions']:.1f} write "
                      f"transactions, {row['transactions']:.1f} transactions a trial; "
                      f"{row['trials_per_s']:.1f} trials/s", file=sys.stderr)  # fmt: skip
    payload = {"benchmark": "storage_writes", "git": git_state(), "machine": machine_info(),
               "config": str(CONFIG), "n_trials": args.trials,
               "target_fsyncs_per_trial": FSYNC_TARGET, "results": results}  # fmt: skip
    write_result(args.out, payload)


if __name__ == "__main__":
    main()
