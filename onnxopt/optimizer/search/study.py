"""The Optuna study on real storage: create, resume, and the baseline in study user attrs.

Study user attrs (plain JSON): ``config`` (the search config), ``space``, ``baseline``
(fp32 metrics on the validation split), ``data_fingerprint`` and ``objectives``. Trial user
attrs: ``config``, ``metrics``, ``constraints``, ``feasible``, ``model_sha256``, and
``fail_reason`` for FAIL trials.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from onnxopt.errors import UsageError

STUDY_NAME = "onnxopt-search"
STUDY_FILE = "study.db"
INTERRUPTED = "interrupted"


def storage_url(run_dir: Path, storage: str | None) -> str:
    """The given storage URL, or SQLite ``study.db`` in the run directory."""
    if storage:
        return storage
    return f"sqlite:///{(Path(run_dir) / STUDY_FILE).resolve()}"


def open_study(
    url: str, directions: list[str], sampler: optuna.samplers.BaseSampler, *, resume: bool
) -> optuna.Study:
    """Create a new study, or load the existing one when resuming.

    Raises:
        UsageError: When a study exists and ``resume`` is false, when resuming a study that
            does not exist, or when the objectives changed.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    exists = STUDY_NAME in {s.study_name for s in optuna.get_all_study_summaries(url)}
    if exists and not resume:
        raise UsageError(
            f"a search already exists in {url}; pass --resume to continue it or choose "
            "another --run-dir"
        )
    if resume and not exists:
        raise UsageError(f"nothing to resume in {url}; run without --resume first")
    study = optuna.create_study(
        storage=url, study_name=STUDY_NAME, sampler=sampler, directions=directions,
        load_if_exists=resume,
    )  # fmt: skip
    if [d.name.lower() for d in study.directions] != directions:
        raise UsageError("the config's objectives differ from the stored study's; use a new run")
    return study


def recover_interrupted(study: optuna.Study) -> int:
    """Mark trials left RUNNING by a killed process as FAIL and enqueue their params again.

    Returns:
        How many trials were recovered.
    """
    storage = study._storage  # the public API has no way to fail another process's trial
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(dict(trial.params), skip_if_exists=False)
        count += 1
    return count


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward n_trials: finished ones, not those a kill interrupted."""
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(
        1 for t in study.get_trials(deepcopy=False, states=done)
        if not t.user_attrs.get(INTERRUPTED)
    )  # fmt: skip


def load_study(url: str) -> optuna.Study:
    """An existing onnxopt study (for ``onnxopt select``).

    Raises:
        UsageError: When the storage holds no onnxopt study.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=url)
    except KeyError:
        raise UsageError(f"no onnxopt search in {url}") from None
