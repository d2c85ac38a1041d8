"""Before export: the front's latencies measured again, interleaved, and the front recomputed.

A trial's latency is one short measurement taken while other trials ran before and after it,
so load that came and went can put a lucky point on the front. Here the front and the points
within the noise of it (not dominated once each trial's latency is read as its interquartile
range) are rebuilt, loaded in one session each with the fp32 base model, and timed in
interleaved rounds (:mod:`onnxopt.optimizer.evaluate.interleaved`). The front is recomputed
on those medians, where two latencies whose intervals overlap count as equal: a point that
only noise would rank below another stays, and the pair is reported as a tie.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from onnxopt import metrics as registry
from onnxopt.config.search import Search
from onnxopt.optimizer.evaluate.interleaved import Interval, measure_interleaved
from onnxopt.optimizer.evaluate.latency import make_feeds
from onnxopt.optimizer.evaluate.measure import runnable_batch_sizes
from onnxopt.optimizer.search.objective import objective_values
from onnxopt.optimizer.search.pareto import is_feasible

MAX_CANDIDATES = 12
"""Points re-measured at most (the front first): each costs a session and its rounds."""
FP32 = "fp32"


def latency_batch(name: str, batch_sizes: Sequence[int]) -> int | None:
    """The batch size a latency metric times (None: not a latency metric)."""
    if name == "latency":
        return batch_sizes[0]
    if registry.known(name) and registry.metric(name).tier == "latency":
        return int(name.removeprefix("latency_b"))
    return None


def _signed(search: Search, metrics: Mapping[str, float]) -> list[float]:
    """Objective values, larger better."""
    values = objective_values(search, dict(metrics))
    return [v if search.direction(m) == "maximize" else -v
            for v, m in zip(values, search.metrics, strict=True)]  # fmt: skip


def _compare(a: float, b: float, ia: Interval | None, ib: Interval | None) -> int:
    """+1 when ``a`` is better (larger signed value), -1 worse, 0 equal or indistinguishable."""
    if ia is not None and ib is not None and ia.overlaps(ib):
        return 0
    return (a > b) - (a < b)


@dataclass(frozen=True)
class Point:
    """A trial as the front sees it: signed objective values and latency intervals."""

    trial: FrozenTrial
    signed: list[float]
    intervals: dict[str, Interval]
    """Per latency objective name."""


def dominates(a: Point, b: Point, names: Sequence[str], *, noise: bool = True) -> bool:
    """``a`` is nowhere worse and somewhere better (latencies with overlapping intervals
    equal when ``noise``)."""
    worse = better = False
    for i, name in enumerate(names):
        ia = a.intervals.get(name) if noise else None
        c = _compare(a.signed[i], b.signed[i], ia, b.intervals.get(name) if noise else None)
        worse |= c < 0
        better |= c > 0
    return better and not worse


def front(points: Sequence[Point], names: Sequence[str]) -> list[Point]:
    """The points no other point dominates (noise-aware), by trial number."""
    kept = [p for p in points if not any(dominates(o, p, names) for o in points if o is not p)]
    return sorted(kept, key=lambda p: p.trial.number)


def ties(points: Sequence[Point], names: Sequence[str]) -> list[dict[str, Any]]:
    """Pairs of front points that the medians alone would rank (one dominating the other),
    but whose latency intervals overlap: indistinguishable, both kept."""
    out = []
    for a in points:
        for b in points:
            if a is not b and dominates(a, b, names, noise=False):
                shared = [n for n in a.intervals if a.intervals[n].overlaps(b.intervals[n])]
                out.append({"faster": a.trial.number, "tied": b.trial.number,
                            "metrics": shared})  # fmt: skip
    return out


def _spread_interval(trial: FrozenTrial, batch: int) -> Interval | None:
    spread = (trial.user_attrs.get("latency_spread") or {}).get(str(batch))
    if not spread:
        return None
    return Interval(spread["median_ms"], spread["q1_ms"], spread["q3_ms"], spread["q1_ms"],
                    spread["q3_ms"], 1, int(spread.get("runs", 0)))  # fmt: skip


def _points(trials, search: Search, intervals) -> list[Point]:
    out = []
    for t in trials:
        metrics = dict(t.user_attrs.get("metrics", {}))
        ivs = intervals(t)
        for name, iv in ivs.items():
            metrics[name] = iv.median
        out.append(Point(t, _signed(search, metrics), ivs))
    return out


def candidates(trials: Sequence[FrozenTrial], search: Search, batches: Mapping[str, int],
               best: Sequence[FrozenTrial]) -> list[FrozenTrial]:  # fmt: skip
    """The front plus the feasible points within the noise of it (up to
    :data:`MAX_CANDIDATES`), one trial per model."""
    seen, feasible = set(), []
    for t in sorted((t for t in trials if is_feasible(t)), key=lambda t: t.number):
        key = t.user_attrs.get("model_sha256") or tuple(sorted(t.params.items()))
        if key not in seen:
            seen.add(key)
            feasible.append(t)

    def iqr(t: FrozenTrial) -> dict[str, Interval]:
        ivs = {n: _spread_interval(t, b) for n, b in batches.items()}
        return {n: iv for n, iv in ivs.items() if iv is not None}

    near = [p.trial for p in front(_points(feasible, search, iqr), list(search.metrics))]
    numbers = {t.number for t in best}
    chosen = [t for t in feasible if t.number in numbers]
    chosen += [t for t in near if t.number not in numbers]
    return sorted(chosen[: max(MAX_CANDIDATES, len(best))], key=lambda t: t.number)


@dataclass
class Remeasured:
    """The interleaved figures and the front recomputed on them (plain JSON by ``as_dict``)."""

    batch_sizes: tuple[int, ...]
    latency: dict[str, dict[str, dict[str, float | int]]]
    """Per trial number (as a string) and ``fp32``: per batch size the interval."""
    front_before: list[int]
    front_after: list[int]
    ties: list[dict[str, Any]] = field(default_factory=list)
    conditions: dict[str, Any] = field(default_factory=dict)
    """CPU integer path, threads, load average before and after."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_sizes": list(self.batch_sizes), "latency_ms": self.latency,
            "front_before": self.front_before, "front_after": self.front_after,
            "ties": self.ties, **self.conditions,
        }  # fmt: skip


def _time_all(loaded: Mapping[str, Any], sizes: Sequence[int], max_rounds: int):
    """Per model key, per batch size, its interleaved interval (each batch size on its own)."""
    measured: dict[str, dict[int, Interval]] = {k: {} for k in loaded}
    for size in sizes:
        runners = {
            k: m.session.runner(make_feeds(m.feeds, size)) for k, m in loaded.items()
            if size in runnable_batch_sizes(m.io, (size,))
        }  # fmt: skip
        if not runners:  # every model has another fixed batch size
            continue
        with next(iter(loaded.values())).session.errors(f"time batch size {size}"):
            result = measure_interleaved(runners, min_rounds=min(5, max_rounds),
                                         max_rounds=max_rounds)  # fmt: skip
        for k, iv in result.items():
            measured[k][size] = iv
    return measured


def _load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def remeasure_front(
    trials: Sequence[FrozenTrial],
    best: Sequence[FrozenTrial],
    *,
    search: Search,
    build: Callable[[FrozenTrial], Any],
    base: Any,
    measurer: Any,
    max_rounds: int,
    lock: Any,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[list[FrozenTrial], Remeasured]:
    """Re-measure the front and the points near it interleaved; recompute the front.

    Args:
        trials: The study's trials.
        best: The front as the search measured it.
        search: The search config (objectives, batch sizes).
        build: Rebuilds a trial's model from its params.
        base: The fp32 base model (timed alongside, for "x faster").
        measurer: The validation measurer (sessions, fitted inputs).
        max_rounds: Rounds at most.
        lock: Held while timing (the run directory's latency lock).
        say: Progress lines.

    Returns:
        The new front (trials, by number) and the figures.
    """
    from onnxopt.runtime.cpu import integer_path

    sizes = tuple(search.evaluation.batch_sizes)
    latency_names = {n: b for n in search.metrics if (b := latency_batch(n, sizes)) is not None}
    names = list(search.metrics)
    # one objective (or a scaled sum) has no front to recompute: only the figures are new
    recompute = bool(latency_names) and len(names) > 1 and not search.strategy.sum_scaled_metrics
    chosen = candidates(trials, search, latency_names, best) if recompute else list(best)
    say(f"timing {len(chosen)} model(s) and the fp32 model again, interleaved "
        f"(up to {max_rounds} rounds per batch size)")  # fmt: skip
    loaded = {str(t.number): measurer.load(build(t)) for t in chosen}
    loaded[FP32] = measurer.load(base)
    before = _load_average()
    with lock:
        measured = _time_all(loaded, sizes, max_rounds)
    figures = {k: {str(b): iv.as_dict() for b, iv in per.items()} for k, per in measured.items()}
    kept, tied = list(best), []
    if recompute:
        points = front(_points(chosen, search, lambda t: {
            n: measured[str(t.number)][b] for n, b in latency_names.items()
            if b in measured[str(t.number)]
        }), names)  # fmt: skip
        kept, tied = [p.trial for p in points], ties(points, names)
    info = Remeasured(
        sizes, figures, [t.number for t in best], [t.number for t in kept], tied,
        {"integer_path": integer_path().as_dict(), "threads": search.evaluation.threads,
         "runtime": search.evaluation.runtime, "load_average_before": before,
         "load_average_after": _load_average()},
    )  # fmt: skip
    return kept, info
