"""Best trials: the feasible Pareto set (or the best feasible trial for one objective).

Feasibility and the front are Optuna's own: a trial's constraint values are stored with
``Trial.set_constraint`` (Optuna keeps them in the trial's system attrs, which the samplers,
``Study.best_trials`` and optuna-dashboard read), and the front is ``Study.best_trials``. So
the dashboard's "Best Trials", ``status``, ``select``, the report and the exports are one set.
The one difference is stated in :func:`best_trials`: a model measured twice (a point visited
again) is exported once.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState


def constraint_values(trial: FrozenTrial) -> dict[str, float]:
    """The trial's constraint values as Optuna stores them (<= 0 means satisfied)."""
    return dict(trial.constraints)


def is_feasible(trial: FrozenTrial) -> bool:
    """True for a COMPLETE trial whose constraints are all satisfied (<= 0), as Optuna's
    ``best_trials`` decides it."""
    if trial.state is not TrialState.COMPLETE or trial.values is None:
        return False
    return all(c <= 0 for c in constraint_values(trial).values())


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is at least as good everywhere and better somewhere (larger better)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def optuna_front(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """Optuna's ``Study.best_trials`` over ``trials`` (every trial on the feasible front,
    ties included), in trial order.

    The trials are copied into an in-memory study: ``best_trials`` is Optuna's public Pareto
    computation, and it filters by the stored constraints exactly as the dashboard does.
    """
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line
    try:
        study = optuna.create_study(
            storage=InMemoryStorage(), sampler=optuna.samplers.RandomSampler(),
            directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
        )  # fmt: skip
    finally:
        optuna.logging.set_verbosity(level)
    complete = [t for t in trials if t.state is TrialState.COMPLETE]  # all best_trials reads
    study.add_trials(complete)
    copies = study.get_trials(deepcopy=False)
    by_copy = {c.number: t for c, t in zip(copies, complete, strict=True)}
    return [by_copy[c.number] for c in study.best_trials]


def best_trials(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """The feasible non-dominated trials, by trial number (one trial per distinct model).

    This is Optuna's front (:func:`optuna_front`) less the later trials of a model already on
    it (the same ``model_sha256``, or the same params: a sampler revisiting a point). Optuna
    keeps such repeats; onnxopt does not export one model twice. Distinct models with equal
    values both stay, as in Optuna. With one objective this is Optuna's ``best_trial``: the
    first best feasible trial.
    """
    front = sorted(optuna_front(trials, directions), key=lambda t: t.number)
    if len(directions) == 1:
        return front[:1]
    kept, seen = [], set()
    for t in front:
        key = t.user_attrs.get("model_sha256") or tuple(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            kept.append(t)
    return kept
