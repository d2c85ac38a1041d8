"""Locks that let several workers share one study exactly.

* The **trial slot lock** is held while a worker counts the trials, asks Optuna for a new
  one and samples its parameters. Counting and creating under one lock keeps the total at
  exactly ``n_trials``, and sampling under it lets a brute-force sampler see every point
  the other workers took. A file lock next to a journal or SQLite file covers workers on
  one machine; a PostgreSQL advisory lock covers workers on several machines. Other RDB
  URLs get no lock (a few trials past ``n_trials`` are then possible).
* The **journal lock** (:class:`FlockJournalLock`) guards appends to a journal file.
* The **latency lock** (a file lock in the run directory) lets one process at a time time a
  candidate, so latency is measured without contention from the other workers.
"""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from pathlib import Path

from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileOpenLock

LATENCY_LOCK = "latency.lock"


class FileLock:
    """An exclusive ``flock`` on a file (released when the process dies, even by SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        import os

        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        import os

        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class PostgresAdvisoryLock:
    """``pg_advisory_lock`` held on one connection of an engine (the storage's)."""

    def __init__(self, engine, key: str) -> None:
        self.engine = engine
        self.lock_id = zlib.crc32(key.encode())
        self._con = None

    def __enter__(self) -> PostgresAdvisoryLock:
        from sqlalchemy import text

        self._con = self.engine.connect()
        self._con.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.lock_id})
        return self

    def __exit__(self, *exc) -> None:
        from sqlalchemy import text

        assert self._con is not None
        try:
            self._con.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.lock_id})
            self._con.commit()
        finally:
            self._con.close()
            self._con = None


def trial_slot_lock(spec: str, storage: BaseStorage, study_name: str):
    """The lock workers of ``study_name`` on ``spec`` hold while creating a trial."""
    if "://" not in spec:
        return FileLock(Path(spec + ".slots.lock"))
    if spec.startswith("sqlite:///"):
        return FileLock(Path(spec.removeprefix("sqlite:///") + ".slots.lock"))
    if spec.startswith("postgresql"):
        return PostgresAdvisoryLock(storage.engine, f"onnxopt:{study_name}")  # type: ignore[attr-defined]
    return contextlib.nullcontext()


class FlockJournalLock(JournalFileOpenLock):
    """Optuna's journal file lock as an ``flock``: a worker killed while it holds the lock
    releases it at once (Optuna's default symlink lock would block the others for 30 s).

    It subclasses the public ``JournalFileOpenLock`` for its interface (``acquire`` and
    ``release``, which the journal backend calls) and replaces both.
    """

    def __init__(self, journal: Path) -> None:
        super().__init__(f"{journal}.lock")
        self._lock = FileLock(Path(f"{journal}.lock"))

    def acquire(self) -> bool:
        self._lock.__enter__()
        return True

    def release(self) -> None:
        self._lock.__exit__(None, None, None)


def repair_journal(journal: Path) -> bool:
    """Cut a record a killed writer left half-written at the end of a journal file.

    Writers append whole lines under the lock, so under the lock a last line without its
    newline can only be a dead writer's. Optuna skips such a line but would glue the next
    record onto it and then fail to read the file.

    Returns:
        Whether the file was cut.
    """
    journal = Path(journal)
    if not journal.is_file():
        return False
    with FileLock(Path(f"{journal}.lock")), open(journal, "rb+") as f:
        size = f.seek(0, 2)
        if size == 0:
            return False
        f.seek(max(size - 65536, 0))
        tail = f.read()
        if tail.endswith(b"\n"):
            return False
        cut = tail.rfind(b"\n")
        keep = size - len(tail) + cut + 1 if cut >= 0 else 0
        if cut < 0 and size > len(tail):
            return False  # a record longer than the window: leave it to Optuna's reader
        f.truncate(keep)
        return True
