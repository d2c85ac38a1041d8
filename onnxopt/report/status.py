"""``onnxopt status``: a stored search's progress, workers, baseline and current best set.

Reads the study only (no data, no model), so it works from any machine that reaches the
storage, while workers are still running.

>>> print(study_status("runs/demo").render())  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from onnxopt import metrics as registry
from onnxopt.errors import UsageError
from onnxopt.optimizer.search.pareto import best_trials
from onnxopt.optimizer.search.study import (
    FINISHED,
    N_TRIALS_ATTR,
    STUDY_NAME,
    WORKER,
    WorkerId,
    is_interrupted,
    load_study,
    redact,
    resolve_source,
    worker_alive,
)
from onnxopt.report.search_report import render_table, trial_rows


@dataclass
class WorkerStatus:
    """One worker process seen in the study (``host:pid:start`` of its trials)."""

    worker: str
    finished: int = 0
    running: int = 0

    def as_dict(self) -> dict[str, Any]:
        who = WorkerId.parse(self.worker)
        alive = worker_alive(self.worker)
        return {
            "worker": self.worker, "host": who.host, "pid": who.pid, "pid_namespace": who.pidns,
            "started": dt.datetime.fromtimestamp(float(who.start)).isoformat(timespec="seconds"),
            "finished": self.finished, "running": self.running,
            "alive": alive,  # None: another host or container, this process cannot tell
        }  # fmt: skip


@dataclass
class StudyStatus:
    """Progress of one study; ``n_trials`` is the stored config's target."""

    study: str
    storage: str
    n_trials: int
    counts: dict[str, int]
    objectives: list[str]
    baseline: dict[str, float] | None
    best: list[dict[str, Any]]
    workers: list[WorkerStatus] = field(default_factory=list)
    remeasured: dict[str, Any] | None = None
    """The last export's interleaved re-measurement: the best set it exported and the ties."""

    @property
    def finished(self) -> int:
        """Trials that count toward n_trials and have ended."""
        return self.counts["complete"] + self.counts["pruned"] + self.counts["failed"]

    @property
    def done(self) -> bool:
        """n_trials finished and nothing running."""
        return self.finished >= self.n_trials and not self.counts["running"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study, "storage": self.storage, "n_trials": self.n_trials,
            "finished": self.finished, "done": self.done,
            "counts": self.counts, "objectives": self.objectives, "baseline": self.baseline,
            "workers": [w.as_dict() for w in self.workers], "best": self.best,
            "remeasured": self.remeasured,
        }  # fmt: skip

    def render(self) -> str:
        """A readable report: progress, workers, baseline and the best-trials table."""
        c = self.counts
        state = "done" if self.done else "in progress"
        lines = [
            f"study {self.study!r} in {self.storage}: {state}",
            (
                f"trials: {self.finished}/{self.n_trials} finished ({c['complete']} complete, "
                f"{c['pruned']} pruned, {c['failed']} failed), {c['running']} running, "
                f"{c['waiting']} waiting; {c['interrupted']} interrupted (re-queued)"
            ),
            f"workers seen: {len(self.workers)}",
        ]
        for w in map(WorkerStatus.as_dict, self.workers):
            alive = {True: "alive", False: "gone", None: "other host or container"}[w["alive"]]
            lines.append(
                f"  {w['host']} pid {w['pid']} (started {w['started']}, {alive}): "
                f"{w['finished']} finished, {w['running']} running"
            )
        lines.append(_baseline_line(self.baseline))
        kind = "Pareto set" if len(self.objectives) > 1 else "best trial"
        so_far = "" if self.done else " so far"
        lines.append(f"{kind}{so_far} (feasible, by {', '.join(self.objectives)}):")
        lines.append(render_table(self.best) if self.best else "  no feasible trial yet")
        again = self.remeasured
        if again and again.get("front_after") != again.get("front_before"):
            tied = "".join(f"; {t['faster']} ties {t['tied']}" for t in again.get("ties", []))
            lines.append(
                f"exported after timing the set again interleaved: trials {again['front_after']}"
                f" (the search's figures gave {again['front_before']}){tied}"
            )
        return "\n".join(lines)


def _baseline_line(base: dict[str, float] | None) -> str:
    if not base:
        return "fp32 baseline: not measured yet (the first worker is still starting)"
    parts = [p for p in (registry.headline(base), f"size {int(base['size']):,} bytes") if p]
    if "latency" in base:
        parts.append(f"latency {base['latency']:.4f} ms (batch 1)")
    return "fp32 baseline (validation): " + ", ".join(parts)


def _counts(trials: list[FrozenTrial]) -> dict[str, int]:
    counts = dict.fromkeys(("complete", "pruned", "failed", "running", "waiting"), 0)
    counts["interrupted"] = 0
    for t in trials:
        if is_interrupted(t):
            counts["interrupted"] += 1
        elif t.state is TrialState.FAIL:
            counts["failed"] += 1
        else:
            counts[t.state.name.lower()] += 1
    return counts


def _workers(trials: list[FrozenTrial]) -> list[WorkerStatus]:
    seen: dict[str, WorkerStatus] = {}
    for t in trials:
        name = t.user_attrs.get(WORKER)
        if not name:
            continue
        w = seen.setdefault(name, WorkerStatus(name))
        if t.state is TrialState.RUNNING:
            w.running += 1
        elif t.state in FINISHED and not is_interrupted(t):
            w.finished += 1
    return list(seen.values())


def _n_trials(attrs: dict[str, Any]) -> int:
    """The study's current target: what the last run set (``--n-trials``), else the config's."""
    if isinstance(attrs.get(N_TRIALS_ATTR), int):
        return attrs[N_TRIALS_ATTR]
    config, space = attrs["config"], attrs.get("space", {})
    # the stored config is the validated model dump, so these keys exist
    strategy = config["search"]["strategy"]
    sampler = space.get("sampler", strategy["sampler"])
    if sampler == "brute-force" and "size" in space:
        return min(strategy["n_trials"], space["size"])
    return strategy["n_trials"]


def study_status(source: str, study_name: str | None = None) -> StudyStatus:
    """The status of the search stored at ``source`` (run dir, journal file or URL).

    Raises:
        UsageError: When there is no such study, or it is not an onnxopt search.
    """
    from onnxopt.config.base import validate
    from onnxopt.config.search import SearchConfig

    spec = resolve_source(source)
    name = study_name or STUDY_NAME
    study = load_study(spec, name)
    attrs = study.user_attrs
    if "config" not in attrs:
        raise UsageError(f"study {name!r} holds no onnxopt search config; is it onnxopt's?")
    search = validate(SearchConfig, attrs["config"], source=redact(spec)).search
    trials = study.get_trials(deepcopy=False)
    directions = [d.name.lower() for d in study.directions]
    return StudyStatus(
        study=name, storage=redact(spec), counts=_counts(trials),
        n_trials=_n_trials(attrs),
        objectives=attrs.get("objectives", []), baseline=attrs.get("baseline"),
        best=_best(trials, directions, search), workers=_workers(trials),
        remeasured=attrs.get("remeasured"),
    )  # fmt: skip


def _best(trials: list[FrozenTrial], directions: list[str], search) -> list[dict[str, Any]]:
    """Table rows of the feasible best trials, with their params."""
    best = best_trials(trials, directions)
    rows = trial_rows(best, search)
    return [{**row, "params": t.params} for row, t in zip(rows, best, strict=True)]
