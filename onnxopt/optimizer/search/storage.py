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
subclass would have to override; the proxy forwards the public storage interface to that
cache (``optuna.storages.get_storage``), as ``optuna.create_study`` would use it. Inside a
trial's :func:`write_batch` it queues the trial's parameter and attribute writes and commits
them in one transaction (with the RDBStorage helpers those writes are made of).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Container, Iterator
from pathlib import Path
from typing import Any

from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

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
    """Writes that are made durable together when the block ends: one fsync on a journal
    opened by :func:`open_storage`, a few transactions on a database (:meth:`RetryingStorage.
    batch`); other storages write each call as before.

    ``durable=False``: the writes need not survive a power loss on their own (on a journal
    they are in the file at once for every reader; the next durable block's fsync covers
    them).
    """
    from onnxopt.optimizer.search.journal import BatchedJournalStorage

    if isinstance(storage, BatchedJournalStorage | RetryingStorage):
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

    def __init__(
        self, inner: BaseStorage, label: str, retry_s: float = DEFAULT_RETRY_S, *,
        cached: bool = False,
    ) -> None:  # fmt: skip
        import optuna

        self.rdb = inner
        # Optuna's trial cache (what optuna.create_study puts around an RDBStorage): finished
        # trials are read once, not on every get_all_trials
        self.inner = optuna.storages.get_storage(inner) if cached else inner
        self.label = label
        self.retry_s = retry_s
        self.engine = getattr(inner, "engine", None)
        self._gave_up = False
        self._depth = 0
        self._queued: list[tuple[str, tuple[Any, ...]]] = []

    @classmethod
    def connect(cls, url: str, *, read_only: bool, retry_s: float) -> RetryingStorage:
        """Open ``url`` (retrying a server that is not up yet), then wrap it."""
        label = redact(url)
        storage = retry(lambda: _rdb_storage(url, read_only), label, retry_s)
        return cls(storage, label, retry_s, cached=not read_only)

    @contextlib.contextmanager
    def batch(self, durable: bool = True) -> Iterator[None]:
        """Trial parameter and attribute writes inside are queued and written together, in
        one transaction, before the next other write (a trial's state, a study attribute)
        or when the outermost block ends. Reads meanwhile see them: the trials this process
        reads carry its queued writes, and study reads do not depend on them. One trial's
        ask, tagging and sampling, then its results and tell, are four write transactions
        (Optuna's create, the queue, the queue, Optuna's state change) instead of one per
        parameter and attribute. (``durable`` is the journal's; a commit is durable.)"""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._flush()

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                        distribution: Any) -> None:  # fmt: skip
        """``set_trial_param``, queued inside :meth:`batch`."""
        self._write("set_trial_param", trial_id, param_name, param_value_internal, distribution)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        """``set_trial_user_attr``, queued inside :meth:`batch`."""
        self._write("set_trial_user_attr", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        """``set_trial_system_attr``, queued inside :meth:`batch`."""
        self._write("set_trial_system_attr", trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        """``get_trial`` with this process's queued writes to it."""
        return self._overlaid(self._retried(lambda: self.inner.get_trial(trial_id)))

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        """``get_all_trials`` with this process's queued writes to them."""
        trials = self._retried(lambda: self.inner.get_all_trials(study_id, deepcopy, states))
        return [self._overlaid(t) for t in trials] if self._queued else trials

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        """``get_trial_user_attrs`` with this process's queued writes."""
        return self.get_trial(trial_id).user_attrs

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        """``get_trial_system_attrs`` with this process's queued writes."""
        return self.get_trial(trial_id).system_attrs

    def _overlaid(self, trial: FrozenTrial) -> FrozenTrial:
        """``trial`` as it reads once the queued writes to it are made (a copy: the trial
        cache's object is left alone)."""
        queued = [(name, args) for name, args in self._queued if args[0] == trial._trial_id]
        if not queued:
            return trial
        trial = copy.copy(trial)
        trial.params, trial.distributions = dict(trial.params), dict(trial.distributions)
        trial.user_attrs, trial.system_attrs = dict(trial.user_attrs), dict(trial.system_attrs)
        for name, (_, key, *rest) in queued:
            if name == "set_trial_param":
                internal, distribution = rest
                trial.params[key] = distribution.to_external_repr(internal)
                trial.distributions[key] = distribution
            elif name == "set_trial_user_attr":
                trial.user_attrs[key] = rest[0]
            else:
                trial.system_attrs[key] = rest[0]
        return trial

    def _write(self, name: str, *args: Any) -> None:
        if self._depth:
            self._queued.append((name, args))
        else:
            self.call(name, *args)

    def _flush(self) -> None:
        """Write the queued calls in one transaction (retried whole while disconnected)."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        self._retried(lambda: _write_together(self.rdb, queued))

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped storage's method ``name``, retrying lost connections (after
        writing what :meth:`batch` queued, unless it reads a study only)."""
        if name not in _STUDY_READS:
            self._flush()
        method = getattr(self.inner, name)
        return self._retried(lambda: method(*args, **kwargs))

    def _retried(self, call: Callable[[], Any]) -> Any:
        budget = 0.0 if self._gave_up else self.retry_s
        try:
            result = retry(call, self.label, budget, self.retry_s)
        except StorageUnavailableError:
            self._gave_up = True
            raise
        self._gave_up = False
        return result


_STUDY_READS = frozenset({
    "get_all_studies", "get_study_directions", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_system_attrs", "get_study_user_attrs",
})  # fmt: skip
"""Reads that no trial write changes (they need not wait for the queued ones)."""


def _write_together(storage: Any, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Optuna RDBStorage writes in one transaction, each as its own method writes it.

    Uses the RDBStorage helpers its public ``set_trial_param`` / ``set_trial_*_attr`` wrap
    (``_set_trial_param_without_commit``, ``_set_trial_attr_without_commit``; optuna is
    pinned to 5.0.x). An integrity error (the same rows committed already: a retried commit
    whose first try reached the server) is ignored, as those methods do."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    attr_models = {"set_trial_user_attr": models.TrialUserAttributeModel,
                   "set_trial_system_attr": models.TrialSystemAttributeModel}  # fmt: skip
    with _create_scoped_session(storage.scoped_session, True) as session:
        for name, args in calls:
            if name == "set_trial_param":
                storage._set_trial_param_without_commit(session, *args)
            else:
                storage._set_trial_attr_without_commit(session, attr_models[name], *args)


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

