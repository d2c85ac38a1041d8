"""Best trials: the feasible Pareto set (or the best feasible trial for one objective).

Feasibility is read from the trial's own ``constraints`` attr, whatever the sampler, so a
trial that violates a constraint is never among the best.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna.trial import FrozenTrial, TrialState


def is_feasible(trial: FrozenTrial) -> bool:
    """True for a COMPLETE trial whose constraints are all satisfied (<= 0)."""
    if trial.state is not TrialState.COMPLETE or trial.values is None:
        return False
    return all(c <= 0 for c in trial.user_attrs.get("constraints", {}).values())


def _signed(trial: FrozenTrial, directions: Sequence[str]) -> list[float]:
    # larger is better for every component after the sign flip
    return [v if d == "maximize" else -v for v, d in zip(trial.values, directions, strict=True)]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is at least as good everywhere and better somewhere (larger better)."""
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(
        x > y for x, y in zip(a, b, strict=True)
    )


def best_trials(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[FrozenTrial]:
    """The feasible non-dominated trials, by trial number (one trial per distinct point).

    With one objective this is the best feasible trial (the first one on ties).
    """
    feasible = [t for t in trials if is_feasible(t)]
    scored = [(t, _signed(t, directions)) for t in feasible]
    if len(directions) == 1:
        return [max(scored, key=lambda p: (p[1][0], -p[0].number))[0]] if scored else []
    front, seen = [], set()
    for t, s in scored:
        if any(dominates(o, s) for _, o in scored):
            continue
        if tuple(s) in seen:  # equal objective values: keep the first trial
            continue
        seen.add(tuple(s))
        front.append(t)
    return sorted(front, key=lambda t: t.number)
