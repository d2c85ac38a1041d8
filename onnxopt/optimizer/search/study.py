"""The Optuna study on real storage: open, join, resume, recover trials of dead workers.

Storage (:mod:`.storage`): by default Optuna's journal file ``study.journal`` in the run
directory (safe for several processes on one machine, and the fastest durable storage Optuna
has: an append per write instead of a database transaction). ``--storage`` takes any Optuna
RDB URL instead (``sqlite:///x.db``, ``postgresql://...`` for workers on several machines) or
the path of another journal file.

Study user attrs (plain JSON): ``config`` (the search config), ``space``, ``baseline``
(fp32 metrics on the validation split), ``data_fingerprint``, ``base_sha256``, ``objectives``
and ``n_trials`` (the current target). Trial user attrs: ``worker`` (:class:`WorkerId`: host,
pid, start time, pid namespace), ``config``, ``metrics``, ``constraints``, ``feasible``,
``model_sha256``, and ``fail_reason`` for FAIL trials.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from onnxopt.errors import UsageError
from onnxopt.metrics import Direction
from onnxopt.optimizer.search.storage import (
    JOURNAL_FILE,
    is_url,
    open_storage,
    redact,
    stored_studies,
)

STUDY_NAME = "onnxopt-search"
INTERRUPTED = "interrupted"
WORKER = "worker"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
N_TRIALS_ATTR = "n_trials"
"""Study attr: the current trial target (``n_trials`` of the last run that set one)."""


def storage_spec(run_dir: Path, storage: str | None) -> str:
    """The given storage (URL or journal path), or the run directory's journal file."""
    if storage:
        return storage
    return str((Path(run_dir) / JOURNAL_FILE).resolve())


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
    directions: list[Direction],
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


def load_study(spec: str, name: str = STUDY_NAME, *, read_only: bool = True) -> optuna.Study:
    """An existing onnxopt study (``select``, ``status``), opened read-only by default.

    Raises:
        UsageError: When the storage holds no such study (the names it holds are listed).
        StorageDamagedError: When the storage cannot be read (what to do is in the message).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec, read_only=read_only)
    if not study_exists(storage, name):
        names = stored_studies(storage)
        held = ", ".join(names) if names else "no study"
        raise UsageError(f"no search named {name!r} in {redact(spec)} (it holds {held})")
    return optuna.load_study(study_name=name, storage=storage)


@dataclass(frozen=True)
class WorkerId:
    """Who ran a trial: host name, pid, process start time and pid namespace.

    The start time tells a reused pid apart; the pid namespace tells apart processes that
    share a host name but not a process table (containers on the host's network, each with
    pid 1): a process in another namespace cannot be looked up from here.
    """

    host: str
    pid: int
    start: str
    pidns: str | None = None

    def __str__(self) -> str:
        ns = f":pidns-{self.pidns}" if self.pidns else ""
        return f"{self.host}:{self.pid}:{self.start}{ns}"

    @classmethod
    def parse(cls, text: str) -> WorkerId:
        """Read ``host:pid:start[:pidns-N]`` (trials of earlier versions have no namespace).

        Raises:
            ValueError: When ``text`` is not a worker id.
        """
        pidns = None
        head, _, last = text.rpartition(":")
        if last.startswith("pidns-"):
            text, pidns = head, last.removeprefix("pidns-")
        host, pid, start = text.rsplit(":", 2)
        return cls(host, int(pid), start, pidns)


def _pid_namespace() -> str | None:
    """This process's pid namespace (the inode of /proc/self/ns/pid; None off Linux)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return None


def this_worker() -> str:
    """``host:pid:start:pidns-N`` of this process (see :class:`WorkerId`)."""
    import psutil

    start = f"{psutil.Process().create_time():.3f}"
    return str(WorkerId(socket.gethostname(), os.getpid(), start, _pid_namespace()))


def worker_alive(worker: str) -> bool | None:
    """Whether the process named by :func:`this_worker` still runs.

    None when this process cannot tell: another host, or the same host name in another pid
    namespace (another container, or the host seen from a container).
    """
    import psutil

    try:
        who = WorkerId.parse(worker)
    except ValueError:
        return None
    if who.host != socket.gethostname():
        return None
    if who.pidns is not None and who.pidns != _pid_namespace():
        return None
    try:
        return f"{psutil.Process(who.pid).create_time():.3f}" == who.start
    except psutil.Error:
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
    dimensions = set((study.user_attrs.get("space") or {}).get("dimensions", {}))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER)
        # no worker tag: killed between ask and tagging (callers hold the trial slot lock)
        alive = worker_alive(worker) if worker else False
        if alive or (alive is None and not foreign):
            continue
        # a trial killed while its params were sampled holds only some: not queued again
        params = trial.params if dimensions <= set(trial.params) else {}
        if mark_interrupted(study, storage, trial.number, params):
            count += 1
    return count


def mark_interrupted(
    study: optuna.Study,
    storage: BaseStorage,
    number: int,
    params: dict,
    reason: str = INTERRUPTED,
) -> bool:
    """Fail one unfinished trial as interrupted and queue its params for another run.

    Another process's trial cannot be told through ``Study.tell`` with attributes, so this
    goes through the storage's public API on the storage object the study was opened on.
    Interrupted trials do not count toward ``n_trials``.

    Args:
        study: The study.
        storage: The storage object the study was opened on.
        number: The trial number.
        params: Its params, queued again (nothing is queued when empty).
        reason: The ``fail_reason`` stored.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_user_attr(trial_id, INTERRUPTED, True)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except RuntimeError:  # another worker finished or recovered it first
        return False
    if params:
        study.enqueue_trial(dict(params), skip_if_exists=False)
    return True


def untagged_running(study: optuna.Study) -> list[FrozenTrial]:
    """RUNNING trials no worker has tagged yet (under the trial slot lock: only the lock
    holder's, stopped between ``ask`` and tagging)."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [t for t in trials if WORKER not in t.user_attrs]


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
    if path.is_dir() and path.name == JOURNAL_FILE:
        raise UsageError(
            f"{path} is a folder, not a journal file; move it away, or restore the journal "
            "from a backup"
        )
    if path.is_dir():
        journal = path / JOURNAL_FILE
        if journal.is_dir():
            raise UsageError(
                f"{journal} is a folder, not a journal file; move it away, or restore the "
                "journal from a backup"
            )
        if not journal.is_file():
            raise UsageError(f"{path} holds no {JOURNAL_FILE}; pass a search's run directory")
        return str(journal.resolve())
    if path.is_file():
        return str(path.resolve())
    raise UsageError(f"{source!r} is neither a run directory, a journal file nor a storage URL")
