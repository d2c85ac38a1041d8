"""The Optuna study on real storage: open, join, resume, recover trials of dead workers.

Storage: by default Optuna's journal file ``study.journal`` in the run directory (safe for
several processes on one machine, and the fastest durable storage Optuna has: an append per
write instead of a database transaction). ``--storage`` takes any Optuna RDB URL instead
(``sqlite:///x.db``, ``postgresql://...`` for workers on several machines) or the path of
another journal file.

Study user attrs (plain JSON): ``config`` (the search config), ``space``, ``baseline``
(fp32 metrics on the validation split), ``data_fingerprint`` and ``objectives``. Trial user
attrs: ``worker`` (host:pid:start time), ``config``, ``metrics``, ``constraints``,
``feasible``, ``model_sha256``, and ``fail_reason`` for FAIL trials.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from onnxopt.errors import UsageError, first_line

STUDY_NAME = "onnxopt-search"
JOURNAL_FILE = "study.journal"
INTERRUPTED = "interrupted"
WORKER = "worker"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def storage_spec(run_dir: Path, storage: str | None) -> str:
    """The given storage (URL or journal path), or the run directory's journal file."""
    if storage:
        return storage
    return str((Path(run_dir) / JOURNAL_FILE).resolve())


def is_url(spec: str) -> bool:
    """Whether ``spec`` is an RDB URL (else it is a journal file path)."""
    return "://" in spec


def open_storage(spec: str) -> BaseStorage:
    """An Optuna storage for a URL or journal path.

    Raises:
        UsageError: For a URL Optuna cannot open (bad scheme, missing driver, no server).
    """
    if not is_url(spec):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        from onnxopt.optimizer.search.locks import FlockJournalLock, repair_journal

        path = Path(spec)
        if not path.parent.is_dir():
            raise UsageError(f"folder of the journal storage {spec} does not exist; create it")
        repair_journal(path)
        backend = JournalFileBackend(str(path), lock_obj=FlockJournalLock(path))
        return JournalStorage(backend)
    try:
        return _rdb_storage(spec)
    except ImportError as exc:
        raise UsageError(
            f"cannot open {redact(spec)}: {exc}; install the database driver"
        ) from None
    except Exception as exc:  # sqlalchemy raises OperationalError, ArgumentError, ...
        raise UsageError(f"cannot open storage {redact(spec)}: {first_line(exc)}") from None


def _rdb_storage(url: str) -> optuna.storages.RDBStorage:
    kwargs = _engine_kwargs(url)
    if not url.startswith("postgresql"):
        return optuna.storages.RDBStorage(with_driver(url), engine_kwargs=kwargs)
    # Optuna creates its tables on first use; workers doing so at once on a fresh database
    # collide (duplicate key in pg_type), so they take turns.
    import sqlalchemy

    from onnxopt.optimizer.search.locks import PostgresAdvisoryLock

    engine = sqlalchemy.create_engine(with_driver(url))
    try:
        with PostgresAdvisoryLock(engine, "onnxopt:schema"):
            return optuna.storages.RDBStorage(with_driver(url), engine_kwargs=kwargs)
    finally:
        engine.dispose()


def with_driver(url: str) -> str:
    """``postgresql://`` as ``postgresql+psycopg2://``: the driver onnxopt installs.

    SQLAlchemy 2.1 maps a plain ``postgresql://`` to psycopg 3, which is not a dependency.
    A URL naming its driver (``postgresql+psycopg://``) is kept.
    """
    if url.startswith("postgresql://"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # several processes wait instead of failing
    if url.startswith("postgresql"):
        return {"pool_pre_ping": True}
    return {}


def redact(url: str) -> str:
    """A URL without its password (error messages are printed and logged)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def study_exists(storage: BaseStorage, name: str) -> bool:
    """Whether ``storage`` holds a study called ``name``."""
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def open_study(
    storage: BaseStorage,
    name: str,
    directions: list[str],
    sampler: optuna.samplers.BaseSampler,
    *,
    join: bool,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it when ``join`` (resume or another worker's study).

    Returns:
        ``(study, created)``.

    Raises:
        UsageError: When a study exists and ``join`` is false, or the objectives changed.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    exists = study_exists(storage, name)
    if exists and not join:
        raise UsageError(
            f"a search named {name!r} already exists in this storage; pass --resume to "
            "continue it or choose another --run-dir"
        )
    study = optuna.create_study(
        storage=storage, study_name=name, sampler=sampler, directions=directions,
        load_if_exists=True,
    )  # fmt: skip
    if [d.name.lower() for d in study.directions] != directions:
        raise UsageError("the config's objectives differ from the stored study's; use a new run")
    return study, not exists


def load_study(spec: str, name: str = STUDY_NAME) -> optuna.Study:
    """An existing onnxopt study (``select``, ``status``).

    Raises:
        UsageError: When the storage holds no such study (the names it holds are listed).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec)
    if not study_exists(storage, name):
        names = [s.study_name for s in storage.get_all_studies()]
        held = ", ".join(names) if names else "no study"
        raise UsageError(f"no search named {name!r} in {redact(spec)} (it holds {held})")
    return optuna.load_study(study_name=name, storage=storage)


def this_worker() -> str:
    """``host:pid:start`` of this process (the start time tells a reused pid apart)."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{psutil.Process().create_time():.3f}"


def worker_alive(worker: str) -> bool | None:
    """Whether the process named by :func:`this_worker` still runs (None: another host)."""
    import psutil

    host, pid, start = worker.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    try:
        return f"{psutil.Process(int(pid)).create_time():.3f}" == start
    except (psutil.Error, ValueError):
        return False


def is_interrupted(trial: FrozenTrial) -> bool:
    """A trial a killed or stopped worker left unfinished (its params were queued again)."""
    return bool(trial.user_attrs.get(INTERRUPTED))


def recover_interrupted(
    study: optuna.Study, storage: BaseStorage, *, foreign: bool = False
) -> int:
    """Fail RUNNING trials whose worker is dead and enqueue their params again.

    Args:
        study: The study.
        storage: The storage object the study was opened on.
        foreign: Also recover RUNNING trials of other hosts (``--resume`` when the user
            knows no other worker runs).

    Returns:
        How many trials were recovered.
    """
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER)
        # no worker tag: killed between ask and tagging (callers hold the trial slot lock)
        alive = worker_alive(worker) if worker else False
        if alive or (alive is None and not foreign):
            continue
        if mark_interrupted(study, storage, trial.number, trial.params):
            count += 1
    return count


def mark_interrupted(
    study: optuna.Study, storage: BaseStorage, number: int, params: dict
) -> bool:
    """Fail one unfinished trial as interrupted and queue its params for another run.

    Another process's trial cannot be told through ``Study.tell`` with attributes, so this
    goes through the storage's public API on the storage object the study was opened on.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", INTERRUPTED)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except RuntimeError:  # another worker finished or recovered it first
        return False
    if params:
        study.enqueue_trial(dict(params), skip_if_exists=False)
    return True


def counted_trials(study: optuna.Study) -> int:
    """Trials that count toward n_trials: finished or running, not those a kill interrupted."""
    states = (*FINISHED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False, states=states)
    return sum(1 for t in trials if not is_interrupted(t))


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Finished trials, without those a kill interrupted."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return [t for t in trials if not is_interrupted(t)]


def resolve_source(source: str) -> str:
    """The storage spec of a run directory, an RDB URL or a journal file (``select``,
    ``status``, ``dashboard``).

    Raises:
        UsageError: When ``source`` is none of these.
    """
    if is_url(source):
        return source
    path = Path(source)
    if path.is_dir():
        journal = path / JOURNAL_FILE
        if not journal.is_file():
            raise UsageError(f"{path} holds no {JOURNAL_FILE}; pass a search's run directory")
        return str(journal.resolve())
    if path.is_file():
        return str(path.resolve())
    raise UsageError(f"{source!r} is neither a run directory, a journal file nor a storage URL")
