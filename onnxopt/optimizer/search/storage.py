"""Open a study storage: for a search (read-write) or a reader (read-only), with one-line errors.

* **Journal file** (the default, ``RUN_DIR/study.journal``): checked record by record before
  Optuna replays it (:mod:`.journal`). A search cuts a half-written last record and says which
  trial it was about; a reader (``status``, ``select``) opens the file read-only: no lock file,
  no repair, no write of any kind.
* **RDB URL** (``sqlite:///x.db``, ``postgresql://...``): every call goes through
  :class:`RetryingStorage`, which retries a call that lost its connection with exponential
  backoff for up to ``retry_s`` seconds (a PostgreSQL restart), then raises
  :class:`~onnxopt.errors.StorageUnavailableError` (one line; ``--resume`` continues). Other
  database failures (a damaged SQLite file) are one line too. Readers open SQLite in
  read-only mode and PostgreSQL with read-only transactions.

Why a proxy of :class:`~optuna.storages.BaseStorage` rather than an RDBStorage subclass:
Optuna wraps an RDBStorage in its trial cache, which calls private RDBStorage methods a
subclass would have to override; the proxy uses only the public storage interface.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage

from onnxopt.errors import (
    StorageDamagedError,
    StorageUnavailableError,
    UsageError,
    first_line,
)

JOURNAL_FILE = "study.journal"
DEFAULT_RETRY_S = 60.0
"""How long a lost database connection is retried before the worker gives up."""
MAX_BACKOFF_S = 5.0


def _quiet(_: str) -> None:
    """Discards notes."""


def is_url(spec: str) -> bool:
    """Whether ``spec`` is an RDB URL (else it is a journal file path)."""
    return "://" in spec


def open_storage(
    spec: str,
    *,
    read_only: bool = False,
    retry_s: float = DEFAULT_RETRY_S,
    notify: Callable[[str], None] = _quiet,
) -> BaseStorage:
    """An Optuna storage for a URL or journal path.

    Args:
        spec: An RDB URL or a journal file path.
        read_only: For readers: nothing is created, locked, repaired or written.
        retry_s: How long database calls retry a lost connection.
        notify: Receives a note when a half-written journal record was cut.

    Raises:
        UsageError: For a missing journal folder, a URL Optuna cannot open (bad scheme,
            missing driver, no server) or a read-only open of a file that does not exist.
        StorageDamagedError: For a damaged journal record (the message says how to recover).
    """
    if not is_url(spec):
        return _journal(Path(spec), read_only, notify)
    try:
        return RetryingStorage.connect(spec, read_only=read_only, retry_s=retry_s)
    except ImportError as exc:
        raise UsageError(
            f"cannot open {redact(spec)}: {exc}; install the database driver"
        ) from None
    except (UsageError, StorageUnavailableError):
        raise
    except Exception as exc:  # sqlalchemy raises OperationalError, ArgumentError, ...
        raise UsageError(f"cannot open storage {redact(spec)}: {_cause_line(exc)}") from None


def _journal(path: Path, read_only: bool, notify: Callable[[str], None]) -> BaseStorage:
    from optuna.storages.journal import JournalStorage

    from onnxopt.optimizer.search import journal
    from onnxopt.optimizer.search.locks import FileLock, FlockJournalLock

    if read_only:
        if not path.exists():
            raise UsageError(f"the journal {path} does not exist; check the path")
        journal.check(path, journal.scan(path))  # a last line being written is skipped
        return JournalStorage(journal.ReadOnlyJournalBackend(str(path)))
    if not path.parent.is_dir():
        raise UsageError(f"folder of the journal storage {path} does not exist; create it")
    cut = b""
    if path.exists():
        if not path.is_dir():
            cut = journal.cut_half_written(path, lambda: FileLock(Path(f"{path}.lock")))
        journal.check(path, journal.scan(path))
    backend = journal.BatchedJournalBackend(str(path), lock_obj=FlockJournalLock(path))
    storage = journal.BatchedJournalStorage(backend)
    if cut:
        notify(journal.cut_note(path, cut, storage))
    return storage


def write_batch(
    storage: BaseStorage, *, durable: bool = True
) -> contextlib.AbstractContextManager[None]:
    """Writes that are made durable together when the block ends (one fsync on a journal
    opened by :func:`open_storage`; other storages write each call as before).

    ``durable=False``: the writes need not survive a power loss on their own (they are in
    the file at once for every reader; the next durable block's fsync covers them).
    """
    from onnxopt.optimizer.search.journal import BatchedJournalStorage

    if isinstance(storage, BatchedJournalStorage):
        return storage.batch(durable)
    return contextlib.nullcontext()


def with_driver(url: str) -> str:
    """``postgresql://`` as ``postgresql+psycopg2://``: the driver onnxopt installs.

    SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3, which is not a dependency.
    A URL naming its driver (``postgresql+psycopg://``) is kept.
    """
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def read_only_url(url: str) -> str:
    """A SQLite URL opened in read-only mode (other URLs unchanged)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "file:") or "?" in url:
        return url
    return f"{prefix}file:{url.removeprefix(prefix)}?mode=ro&uri=true"


def engine_kwargs(url: str, read_only: bool = False) -> dict[str, Any]:
    """SQLAlchemy engine options: waits instead of failures, stale connections replaced."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # several processes wait instead of failing
    if url.startswith("postgresql"):
        kwargs: dict[str, Any] = {"pool_pre_ping": True}  # connections a restart killed
        if read_only:
            kwargs["connect_args"] = {"options": "-c default_transaction_read_only=on"}
        return kwargs
    return {}


def redact(url: str) -> str:
    """A URL without its password (error messages are printed and logged)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _chain(exc: BaseException):
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_connection_error(exc: BaseException) -> bool:
    """Whether a storage failure is a lost or refused database connection (worth a retry):
    the server went away, restarts or refuses connections; SQLite's file is locked."""
    import sqlalchemy.exc as sa

    for e in _chain(exc):
        if isinstance(e, sa.DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, sa.DisconnectionError | sa.TimeoutError):
            return True
        if isinstance(e, sa.OperationalError | sa.InterfaceError):
            orig = getattr(e, "orig", None)
            if type(orig).__module__.startswith("sqlite3"):
                return "locked" in str(orig) or "busy" in str(orig)
            return True
    return False


def _cause_line(exc: BaseException) -> str:
    """The first line of the deepest database error (Optuna wraps them in its own)."""
    import sqlalchemy.exc as sa

    for e in _chain(exc):
        if isinstance(e, sa.DBAPIError) and e.orig is not None:
            return first_line(e.orig)
    return first_line(exc)


def _is_database_error(exc: BaseException) -> bool:
    import optuna
    import sqlalchemy.exc as sa

    return isinstance(exc, optuna.exceptions.StorageInternalError | sa.SQLAlchemyError)


_DELEGATED = tuple(
    sorted(
        name
        for name in dir(BaseStorage)
        if not name.startswith("_") and callable(getattr(BaseStorage, name))
    )
)
"""Every public method of Optuna's storage interface (the proxy forwards each one)."""


def _forward(name: str):
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self.call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"``{name}`` of the wrapped storage, retried while disconnected."
    return method


_Forwarding = type("_Forwarding", (BaseStorage,), {n: _forward(n) for n in _DELEGATED})


class RetryingStorage(_Forwarding):  # type: ignore[misc, valid-type]
    """An RDB storage whose calls survive a database restart.

    A call that fails because the connection was lost or refused is retried with exponential
    backoff (0.2 s doubling to 5 s) until ``retry_s`` seconds have passed; then it raises
    :class:`StorageUnavailableError`, and later calls try once only (so a worker that gives
    up fails fast while it marks its trial). Other database failures raise
    :class:`StorageDamagedError` with the database's own first line.

    A retried write whose commit reached the server just before the connection died would
    run twice; PostgreSQL aborts the transactions of connections it terminates, so that
    window is the commit acknowledgement only.

    Args:
        inner: The RDBStorage.
        label: The URL without its password (for messages).
        retry_s: The retry budget in seconds.
    """

    def __init__(self, inner: BaseStorage, label: str, retry_s: float = DEFAULT_RETRY_S) -> None:
        self.inner = inner
        self.label = label
        self.retry_s = retry_s
        self.engine = getattr(inner, "engine", None)
        self._gave_up = False

    @classmethod
    def connect(cls, url: str, *, read_only: bool, retry_s: float) -> RetryingStorage:
        """Open ``url`` (retrying a server that is not up yet), then wrap it."""
        label = redact(url)
        storage = retry(lambda: _rdb_storage(url, read_only), label, retry_s)
        return cls(storage, label, retry_s)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped storage's method ``name``, retrying lost connections."""
        method = getattr(self.inner, name)
        budget = 0.0 if self._gave_up else self.retry_s
        try:
            result = retry(lambda: method(*args, **kwargs), self.label, budget, self.retry_s)
        except StorageUnavailableError:
            self._gave_up = True
            raise
        self._gave_up = False
        return result


def retry(
    call: Callable[[], Any], label: str, budget_s: float, retried_s: float | None = None
) -> Any:
    """``call()``, retried with backoff while it fails on a lost connection, up to ``budget_s``
    (``retried_s``: the retrying already done for this storage, which the message reports
    when a call after giving up is not retried again).

    Raises:
        StorageUnavailableError: When the connection is still lost after the budget.
        StorageDamagedError: For other database failures.
    """
    deadline = time.monotonic() + budget_s
    delay = 0.2
    while True:
        try:
            return call()
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            if not is_connection_error(exc):
                raise StorageDamagedError(
                    f"the study storage {label} failed: {_cause_line(exc)}; if the database is "
                    "damaged, restore it from a backup or start a new search on another "
                    "--storage"
                ) from None
            left = deadline - time.monotonic()
            if left <= 0:
                shown = budget_s if retried_s is None else retried_s
                raise StorageUnavailableError(
                    f"lost the study storage {label}: {_cause_line(exc)} (retried for "
                    f"{shown:.0f} s); run again with --resume once it is back (trials left "
                    "running run again)"
                ) from None
            time.sleep(min(delay, left))
            delay = min(delay * 2, MAX_BACKOFF_S)


def _rdb_storage(url: str, read_only: bool) -> BaseStorage:
    import optuna

    target = with_driver(read_only_url(url) if read_only else url)
    kwargs = engine_kwargs(url, read_only)
    if read_only or not url.startswith("postgresql"):
        return optuna.storages.RDBStorage(
            target, engine_kwargs=kwargs, skip_table_creation=read_only
        )
    # Optuna creates its tables on first use; workers doing so at once on a fresh database
    # collide (duplicate key in pg_type), so they take turns.
    import sqlalchemy

    from onnxopt.optimizer.search.locks import PostgresAdvisoryLock

    engine = sqlalchemy.create_engine(with_driver(url))
    try:
        with PostgresAdvisoryLock(engine, "onnxopt:schema"):
            return optuna.storages.RDBStorage(target, engine_kwargs=kwargs)
    finally:
        engine.dispose()


def storage_label(spec: str) -> str:
    """How messages name a storage: a journal's path, a URL without its password."""
    return redact(spec) if is_url(spec) else spec


def stored_studies(storage: BaseStorage) -> list[str]:
    """The names of the studies a storage holds."""
    return [s.study_name for s in storage.get_all_studies()]

