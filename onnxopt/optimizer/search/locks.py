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
    """``pg_advisory_lock`` held on one connection of an engine (the storage's).

    Taking it retries a lost or refused connection like every storage call (a server
    restart); a server that dropped the session released the lock with it, so releasing
    then is a no-op.
    """

    def __init__(self, engine, key: str, retry_s: float | None = None) -> None:
        from onnxopt.optimizer.search.storage import DEFAULT_RETRY_S

        self.engine = engine
        self.lock_id = zlib.crc32(key.encode())
        self.retry_s = DEFAULT_RETRY_S if retry_s is None else retry_s
        self._con = None

    def _acquire(self):
        from sqlalchemy import text

        con = self.engine.connect()
        try:
            con.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.lock_id})
        except BaseException:
            con.close()
            raise
        return con

    def __enter__(self) -> PostgresAdvisoryLock:
        from onnxopt.optimizer.search.storage import redact, retry

        label = redact(str(self.engine.url))
        self._con = retry(self._acquire, label, self.retry_s)
        return self

    def __exit__(self, *exc) -> None:
        from sqlalchemy import text

        from onnxopt.optimizer.search.storage import is_connection_error

        assert self._con is not None
        con, self._con = self._con, None
        try:
            con.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.lock_id})
            con.commit()
        except Exception as err:
            if not is_connection_error(err):
                raise
        finally:
            with contextlib.suppress(Exception):
                con.close()


def trial_slot_lock(spec: str, storage: BaseStorage, study_name: str):
    """The lock workers of ``study_name`` on ``spec`` hold while creating a trial."""
    if "://" not in spec:
        return FileLock(Path(spec + ".slots.lock"))
    if spec.startswith("sqlite:///"):
        return FileLock(Path(spec.removeprefix("sqlite:///") + ".slots.lock"))
    if spec.startswith("postgresql"):
        engine = storage.engine  # type: ignore[attr-defined]
        return PostgresAdvisoryLock(engine, f"onnxopt:{study_name}", storage.retry_s)  # type: ignore[attr-defined]
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
