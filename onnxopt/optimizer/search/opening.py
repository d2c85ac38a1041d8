"""Open the search's study: refuse before anything is written, create or join, check the match.

The order keeps a refused command from changing anything on disk: :func:`precheck` reads the
storage (a journal read-only) and refuses a study that exists without ``--resume``, or
``--resume`` on a storage that holds no such study (an empty file, another tool's studies),
before the run directory's base model is made; :func:`open_search` then creates or joins the
study and checks that a joined study searches the same data, space and base model.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from onnxopt.errors import UsageError
from onnxopt.optimizer.search.context import SearchContext
from onnxopt.optimizer.search.locks import trial_slot_lock
from onnxopt.optimizer.search.objective import objective_directions, objective_names
from onnxopt.optimizer.search.rundir import move_aside
from onnxopt.optimizer.search.storage import (
    is_url,
    open_storage,
    storage_label,
    stored_studies,
)
from onnxopt.optimizer.search.study import N_TRIALS_ATTR, open_study, study_exists
from onnxopt.samplers import make_sampler


@dataclass
class Stored:
    """What :func:`precheck` found: the study's attrs (None: no such study) and, for a URL,
    the storage it opened (reused, so a database is connected once)."""

    attrs: dict[str, Any] | None
    storage: BaseStorage | None = None

    @property
    def base_sha256(self) -> str | None:
        return None if self.attrs is None else self.attrs.get("base_sha256")


def restart(run_dir: Path, spec: str, name: str, *, own_journal: bool) -> Path | None:
    """``--restart``: move the run directory's previous search aside (its journal too when it
    is the search's storage). A study in a storage of its own is never deleted.

    Returns:
        Where the previous files went (None: there were none).

    Raises:
        UsageError: When a study called ``name`` exists in a storage given with --storage.
    """
    if not own_journal and _exists(spec, name):
        raise UsageError(
            f"--restart does not delete study {name!r} in {storage_label(spec)}, which other "
            "runs may share; choose another --study name (or delete it with optuna delete-study)"
        )
    return move_aside(run_dir, journal=own_journal)


def _exists(spec: str, name: str) -> bool:
    if not is_url(spec) and not Path(spec).exists():
        return False
    storage = open_storage(spec, read_only=not is_url(spec))
    return study_exists(storage, name)


def _empty_file(spec: str) -> bool:
    """A journal or SQLite file that does not exist or has 0 bytes."""
    path = Path(spec.removeprefix("sqlite:///")) if spec.startswith("sqlite:///") else Path(spec)
    return not path.exists() or (path.is_file() and path.stat().st_size == 0)


def _holds(spec: str, storage: BaseStorage | None) -> str:
    if storage is None or _empty_file(spec) and not is_url(spec):
        return "the file is empty: truncated, or no search ever started there"
    names = stored_studies(storage)
    return f"it holds {', '.join(map(repr, names))}" if names else "it holds no study"


def precheck(
    spec: str, name: str, *, resume: bool, join: bool, retry_s: float
) -> Stored:
    """Refuse, before anything is written, what the storage says cannot run.

    Raises:
        UsageError: A study called ``name`` exists and the run neither resumes nor joins;
            or ``--resume`` finds no such study (an empty or foreign storage).
        StorageDamagedError: The storage cannot be read.
    """
    storage: BaseStorage | None = None
    reused = None
    if is_url(spec) and not (spec.startswith("sqlite:///") and _empty_file(spec)):
        storage = reused = open_storage(spec, retry_s=retry_s)
    elif not is_url(spec) and not _empty_file(spec):
        storage = open_storage(spec, read_only=True)
    exists = storage is not None and study_exists(storage, name)
    label = storage_label(spec)
    if exists and not join:
        raise UsageError(
            f"a search named {name!r} already exists in {label}; pass --resume to continue "
            "it, --restart to move it aside and start anew, or choose another --run-dir"
        )
    if resume and not exists:
        raise UsageError(
            f"--resume: {label} holds no search named {name!r} ({_holds(spec, storage)}); "
            "nothing to resume: restore the storage from a backup, pass --study NAME for "
            "another study, or --restart to start a new search"
        )
    attrs = None
    if exists and storage is not None:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
    return Stored(attrs, reused)


def open_search(
    ctx: SearchContext,
    spec: str,
    name: str,
    *,
    join: bool,
    limit: int,
    storage: BaseStorage | None = None,
    seed_offset: int = 0,
    notify: Callable[[str], None] = lambda _: None,
    baseline: Callable[[], dict] | None = None,
    set_target: bool = True,
) -> tuple[optuna.Study, BaseStorage]:
    """Open (or join) the study; store the config, space and baseline when creating it.

    Args:
        ctx: The search context.
        spec: The storage spec.
        name: The study name.
        join: Load the study when it exists (resume, or another worker's study).
        limit: This run's trial target (stored as the study's ``n_trials``).
        storage: An already opened storage of ``spec``.
        seed_offset: Added to the sampler's seed (worker ``i`` samples with ``seed + i``).
        notify: Receives notes (a cut journal record).
        baseline: Measures the fp32 baseline (default: ``ctx.baseline``).
        set_target: Store ``limit`` as the study's target (the process that runs the search
            does; the worker processes it starts read it).
    """
    s = ctx.config.search
    measure = baseline or ctx.baseline
    # measured before the study exists (and, for a journal, before its file is made): a model
    # or data problem leaves no half-made study, and a kill meanwhile leaves no empty journal
    first = None
    if storage is None and not is_url(spec) and not _exists(spec, name):
        first = measure()
    storage = storage or open_storage(spec, retry_s=s.storage.retry_s, notify=notify)
    if first is None and not study_exists(storage, name):
        first = measure()
    sampler = make_sampler(ctx.space.sampler, s.strategy.seed + seed_offset, ctx.space.shape(limit))
    # One worker at a time: the first to get here creates the study, stores its attrs and
    # enqueues the fixed points; the others wait, then check they search the same thing.
    with trial_slot_lock(spec, storage, name):
        study, created = open_study(storage, name, objective_directions(s), sampler, join=join)
        if created or "baseline" not in study.user_attrs:
            _describe_study(study, ctx, limit)
            study.set_user_attr("baseline", first or measure())  # last: marks it done
        else:
            check_same_search(study, ctx)
        if set_target and study.user_attrs.get(N_TRIALS_ATTR) != limit:
            study.set_user_attr(N_TRIALS_ATTR, limit)
    return study, storage


def _describe_study(study: optuna.Study, ctx: SearchContext, limit: int) -> None:
    s = ctx.config.search
    with warnings.catch_warnings():  # experimental since Optuna 3.2, still there in 5.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(objective_names(s))  # the dashboard's objective labels
    study.set_user_attr("config", ctx.config.model_dump(mode="json"))
    study.set_user_attr("space", ctx.space.as_dict())
    study.set_user_attr("data_fingerprint", ctx.dataset.fingerprint())
    study.set_user_attr("base_sha256", ctx.base_sha256())
    study.set_user_attr("objectives", objective_names(s))
    # counted metrics' drops are whole samples of this split (select compares them so)
    study.set_user_attr("validation_samples", len(ctx.dataset.val))
    points = list(s.strategy.enqueue)
    if s.strategy.enqueue_obvious:  # while the budget has room: none is left waiting
        extra = [p for p in ctx.space.obvious_points() if p not in points]
        points += extra[: max(limit - len(points), 0)]
    for point in points:
        study.enqueue_trial(ctx.space.encode(point), skip_if_exists=True)


def check_same_search(study: optuna.Study, ctx: SearchContext, *, space: bool = True) -> None:
    """Refuse a study made on other data, another search space or another base model.

    Raises:
        UsageError: Naming what differs.
    """
    if study.user_attrs.get("data_fingerprint") != ctx.dataset.fingerprint():
        raise UsageError("the data differ from the stored study's; use the same data files")
    keys = ("dimensions", "fixed", "ordinal")
    stored_space = {k: (study.user_attrs.get("space") or {}).get(k) for k in keys}
    ours = json.loads(json.dumps({k: ctx.space.as_dict()[k] for k in keys}))
    if space and stored_space != ours:
        raise UsageError("the config's search space differs from the stored study's")
    stored = study.user_attrs.get("base_sha256")
    if stored is not None and stored != ctx.base_sha256():
        raise UsageError(
            f"the base model differs from the stored study's (sha256 {stored[:12]}...); give "
            "every worker the same model file (an ONNX file, rather than a recipe trained on "
            "each machine)"
        )
