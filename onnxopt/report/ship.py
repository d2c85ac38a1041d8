"""The end of a search for people: what happened to the trials and which model to ship.

:func:`trial_counts` sorts the study's trials (complete, feasible, infeasible by violated
constraint, failed by reason); :func:`shipping_summary` turns a finished search into the
counts, one row per exported model against the fp32 base model on the test split (metric
change, bytes and "x smaller", latency with its spread and "x faster" per batch size, file)
and the commands to run next. :func:`all_failed` is the one line ``onnxopt search`` exits 1
with when no trial completed.
"""

from __future__ import annotations

import shlex
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from onnxopt import metrics as registry
from onnxopt.optimizer.search.pareto import constraint_values, is_feasible
from onnxopt.optimizer.search.study import STUDY_NAME, is_interrupted

if TYPE_CHECKING:
    from onnxopt.optimizer.search.run import SearchResult

TOP_REASONS = 3
REASON_CHARS = 160


@dataclass
class TrialCounts:
    """What became of a study's trials (interrupted ones, which run again, apart)."""

    total: int = 0
    complete: int = 0
    feasible: int = 0
    failed: int = 0
    interrupted: int = 0
    other: int = 0
    violated: Counter = field(default_factory=Counter)
    """Per constraint name, how many complete trials violated it."""
    reasons: Counter = field(default_factory=Counter)
    """Per failure reason (its first line), how many trials failed with it."""
    points: int = 0
    """Distinct points measured (complete or failed)."""
    stopped: int = 0
    """Complete trials screening stopped early (they could not meet max_accuracy_drop)."""
    screened_samples: tuple[int, int] = (0, 0)
    """Validation samples scored, and the samples a full pass per screened trial scores."""

    @property
    def samples_saved(self) -> float:
        """The share of the screened trials' validation samples never scored."""
        scored, full = self.screened_samples
        return 1.0 - scored / full if full else 0.0

    @property
    def infeasible(self) -> int:
        return self.complete - self.feasible


def _reason(trial: FrozenTrial) -> str:
    text = str(trial.user_attrs.get("fail_reason") or "no reason stored")
    first = text.strip().splitlines()[0] if text.strip() else "no reason stored"
    return first if len(first) <= REASON_CHARS else first[: REASON_CHARS - 3] + "..."


def trial_counts(trials: list[FrozenTrial]) -> TrialCounts:
    """Count the trials by outcome, violated constraint and failure reason."""
    c = TrialCounts(total=len(trials))
    points = set()
    for t in trials:
        if is_interrupted(t):
            c.interrupted += 1
            continue
        if t.state is TrialState.COMPLETE:
            c.complete += 1
            c.feasible += is_feasible(t)
            c.violated.update(k for k, v in constraint_values(t).items() if v > 0)
            if screened := t.user_attrs.get("screened"):
                c.stopped += bool(screened["stopped"])
                scored, full = c.screened_samples
                c.screened_samples = (scored + screened["scored"], full + screened["of"])
        elif t.state is TrialState.FAIL:
            c.failed += 1
            c.reasons[_reason(t)] += 1
        else:
            c.other += 1
            continue
        points.add(tuple(sorted((k, repr(v)) for k, v in t.params.items())))
    c.points = len(points)
    return c


def stopped_accuracy_bound(trial: FrozenTrial) -> float | None:
    """The highest accuracy a trial screening stopped could have had (None when it was not
    stopped): every sample it did not score, right."""
    screened = trial.user_attrs.get("screened")
    if not screened or not screened.get("stopped"):
        return None
    return (screened["correct"] + screened["of"] - screened["scored"]) / screened["of"]


def _top(counter: Counter, n: int = TOP_REASONS) -> str:
    shown = [f"{k}: {v}" for k, v in counter.most_common(n)]
    rest = sum(counter.values()) - sum(v for _, v in counter.most_common(n))
    return "; ".join(shown) + (f"; {rest} more" if rest else "")


def counts_line(c: TrialCounts, space_size: int | None = None) -> str:
    """``30 trials: 24 complete (18 feasible, 6 infeasible: accuracy_drop 6), 6 failed
    (...)``, and how much of the space was visited."""
    parts = [f"{c.complete} complete ({c.feasible} feasible, {c.infeasible} infeasible"]
    if c.violated:
        parts[0] += ": " + ", ".join(f"{k} {v}" for k, v in c.violated.most_common())
    parts[0] += ")"
    parts.append(f"{c.failed} failed" + (f" ({_top(c.reasons)})" if c.failed else ""))
    if c.interrupted:
        parts.append(f"{c.interrupted} interrupted (run again on --resume)")
    if c.other:
        parts.append(f"{c.other} running or waiting")
    line = f"{c.total} trials: " + ", ".join(parts)
    if c.stopped:
        line += (
            f"\nscreening stopped {c.stopped} early (they could not meet max_accuracy_drop): "
            f"{c.samples_saved:.1%} of the validation samples not scored"
        )
    if space_size:
        line += f"\nvisited {c.points} of {space_size:,} points ({c.points / space_size:.1%})"
    return line


def all_failed(c: TrialCounts) -> str | None:
    """The line a search exits 1 with when trials ran and none completed (None otherwise)."""
    if c.complete or not c.failed:
        return None
    return f"every trial failed ({c.failed}): {_top(c.reasons)}"


def no_feasible(c: TrialCounts) -> str | None:
    """``no feasible trial: 12 violated accuracy_drop, ...`` when all complete trials are
    infeasible (None otherwise)."""
    if not c.complete or c.feasible:
        return None
    violated = ", ".join(f"{v} violated {k}" for k, v in c.violated.most_common())
    return f"no feasible trial: {violated}; loosen [search.constraints] or widen the space"


def primary_metric(result: SearchResult) -> str | None:
    """The quality metric a row shows: the first objective of the ``outputs`` tier (a user
    metric counts), else accuracy when measured."""
    search = result.context.config.search
    for name in search.metrics:
        if not registry.known(name) or registry.metric(name).tier == "outputs":
            return name
    exported = result.exported[0].artifacts["onnx"] if result.exported else {}
    return "accuracy" if "accuracy" in exported else None


def _latency(stats: dict[str, float]) -> str:
    return f"{stats['median_ms']:.4g} ({stats['q1_ms']:.4g}-{stats['q3_ms']:.4g})"


def _latencies(result: SearchResult, e) -> tuple[dict, dict]:
    """Per batch size the model's and the fp32 model's latency: the interleaved figures when
    the front was timed again, else those of the exported file on the test split."""
    again = result.remeasured
    if again is not None and str(e.number) in again.latency:
        return again.latency[str(e.number)], again.latency.get("fp32", {})
    return e.latency_ms.get("onnx") or {}, (result.fp32_test or {}).get("latency_ms", {})


def ship_rows(result: SearchResult) -> list[dict[str, Any]]:
    """One row per exported model: validation and test metric, change vs fp32 on test,
    bytes and x smaller, latency per batch size (median, IQR) and x faster, file."""
    name = primary_metric(result)
    base_metrics = (result.fp32_test or {}).get("metrics", {})
    trials = {t.number: t for t in result.best}
    rows = []
    for e in result.exported:
        test = e.artifacts["onnx"]
        val = trials[e.number].user_attrs.get("metrics", {}) if e.number in trials else {}
        row: dict[str, Any] = {"trial": e.number}
        if name is not None:
            row[f"val {name}"] = _num(val.get(name))
            row[f"test {name}"] = _num(test.get(name))
            if name in base_metrics and name in test:
                row["vs fp32"] = f"{test[name] - base_metrics[name]:+.4f}"
        row["bytes"] = f"{e.size_bytes:,}"
        if base_metrics.get("size"):
            row["smaller"] = f"{base_metrics['size'] / e.size_bytes:.2f}x"
        ours, fp32 = _latencies(result, e)
        for batch, stats in ours.items():
            row[f"b{batch} ms (IQR)"] = _latency(stats)
            base = fp32.get(batch)
            if base:
                row[f"b{batch} faster"] = f"{base['median_ms'] / stats['median_ms']:.2f}x"
        row["file"] = str(e.onnx_path)
        rows.append(row)
    return rows


def tie_lines(result: SearchResult) -> list[str]:
    """The pairs whose latencies the interleaved rounds could not tell apart."""
    again = result.remeasured
    if again is None:
        return []
    return [
        f"tie: trials {t['faster']} and {t['tied']} ({', '.join(t['metrics'])}: intervals "
        "overlap; both kept, not ranked by noise)"
        for t in again.ties
    ]


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def render(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of rows (columns in first-seen order, blanks where missing)."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(columns), *(line(r) for r in cells)])


def next_commands(result: SearchResult, study_name: str | None = None) -> list[str]:
    """What to run next: pick a model by a rule, open the dashboard, read the report."""
    run = shlex.quote(str(result.context.run_dir))
    study = f" --study {shlex.quote(study_name)}" if study_name not in (None, STUDY_NAME) else ""
    limit = result.context.config.search.constraints.max_accuracy_drop
    rule = f"min size where accuracy_drop <= {limit if limit is not None else 0.01:g}"
    lines = [
        f"  onnxopt select {run}{study} --rule {shlex.quote(rule)}",
        f"  onnxopt dashboard {run}{study}",
        f"  onnxopt status {run}{study}",
    ]
    folder = result.context.run_dir
    report = next((folder / n for n in ("report.html", "pareto.html") if (folder / n).is_file()),
                  folder / "report.json")  # fmt: skip
    lines.append(f"  report: {report}")
    return lines


def shipping_summary(result: SearchResult, study_name: str | None = None) -> str:
    """The counts, what to ship (one row per exported model) and the next commands."""
    c = trial_counts(result.study.get_trials(deepcopy=False))
    lines = [counts_line(c, result.context.space.size)]
    missing = no_feasible(c)
    if missing:
        lines.append(missing)
    if result.exported:
        fp32 = (result.fp32_test or {}).get("metrics", {})
        name = primary_metric(result)
        head = "to ship (test split"
        if fp32:
            shown = f"{name} {fp32[name]:.4f}, " if name in fp32 else ""
            head += f"; fp32 {shown}{int(fp32['size']):,} bytes"
        again = result.remeasured
        if again is not None:
            rounds = {iv["rounds"] for b in again.latency.values() for iv in b.values()}
            head += (f"; latency timed again interleaved, {min(rounds)}-{max(rounds)} rounds, "
                     "95% interval of the median")  # fmt: skip
        lines += [head + "):", render(ship_rows(result)), *tie_lines(result)]
    lines += ["next:", *next_commands(result, study_name)]
    return "\n".join(lines)
