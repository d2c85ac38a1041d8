"""Wall-clock latency of a session per batch size: warm-up, then timed runs with perf_counter."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from onnxopt.data.shaping import check_batch_bytes
from onnxopt.errors import EvaluationError, UsageError
from onnxopt.runtime.base import Session
from onnxopt.runtime.io import Feeds

SMALL_BATCH = 16
"""Batches up to this size get the longer budget: their runs are short and noisy."""


@dataclass(frozen=True)
class LatencyBudget:
    """How long to measure one batch size.

    Timed runs continue until there are at least ``repeats`` of them *and* at least
    ``min_time_s`` seconds have passed.
    """

    warmup: int
    repeats: int
    min_time_s: float

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1 or self.min_time_s < 0:
            raise UsageError(
                f"latency budget needs warmup >= 0, repeats >= 1 and min_time_s >= 0; got "
                f"warmup={self.warmup}, repeats={self.repeats}, min_time_s={self.min_time_s}"
            )


def default_budget(batch_size: int) -> LatencyBudget:
    """The budget for a batch size on a small (2-core) machine: ~0.2 s small, ~0.1 s large."""
    if batch_size <= SMALL_BATCH:
        return LatencyBudget(warmup=10, repeats=50, min_time_s=0.2)
    return LatencyBudget(warmup=3, repeats=10, min_time_s=0.1)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one batch size, in milliseconds per run (one run = one batch)."""

    batch_size: int
    runs: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    q1_ms: float = float("nan")
    """25th percentile: with ``q3_ms`` the spread (IQR) that the median is read with."""
    q3_ms: float = float("nan")

    @property
    def iqr_ms(self) -> float:
        """Interquartile range of the runs (ms)."""
        return self.q3_ms - self.q1_ms

    @property
    def throughput_sps(self) -> float:
        """Samples per second at the median latency."""
        return self.batch_size / (self.median_ms / 1000.0)

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON-able values, throughput included."""
        return {
            "batch_size": self.batch_size,
            "runs": self.runs,
            "median_ms": self.median_ms,
            "p90_ms": self.p90_ms,
            "mean_ms": self.mean_ms,
            "q1_ms": self.q1_ms,
            "q3_ms": self.q3_ms,
            "throughput_sps": self.throughput_sps,
        }


@dataclass(frozen=True)
class LatencyResult:
    """Latency for every measured batch size, in the order measured."""

    stats: tuple[LatencyStats, ...]

    def for_batch(self, batch_size: int) -> LatencyStats:
        """The stats of one batch size.

        Raises:
            UsageError: When that batch size was not measured.
        """
        for row in self.stats:
            if row.batch_size == batch_size:
                return row
        measured = ", ".join(str(r.batch_size) for r in self.stats)
        raise UsageError(f"batch size {batch_size} was not measured; measured: {measured}")

    @property
    def throughput_batch_size(self) -> int:
        """The batch size throughput is reported at: the largest measured."""
        return max(r.batch_size for r in self.stats)

    @property
    def throughput_sps(self) -> float:
        """Samples per second at the largest measured batch size."""
        return self.for_batch(self.throughput_batch_size).throughput_sps

    def to_dict(self) -> dict[str, dict[str, float | int]]:
        """Per batch size (as a string key, so JSON round-trips) its stats."""
        return {str(r.batch_size): r.to_dict() for r in self.stats}


def summarize(batch_size: int, seconds: Sequence[float]) -> LatencyStats:
    """Median, quartiles, 90th percentile and mean (ms) of per-run wall times in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    q1, median, q3, p90 = np.percentile(ms, [25, 50, 75, 90])
    return LatencyStats(
        batch_size=batch_size,
        runs=len(ms),
        median_ms=float(median),
        p90_ms=float(p90),
        mean_ms=float(ms.mean()),
        q1_ms=float(q1),
        q3_ms=float(q3),
    )


def time_runs(run: Callable[[], object], budget: LatencyBudget) -> list[float]:
    """Call ``run`` for the warm-up, then time calls until the budget is met (seconds each).

    The garbage collector is paused while timing so a collection does not land in a run.
    """
    for _ in range(budget.warmup):
        run()
    times: list[float] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while len(times) < budget.repeats or time.perf_counter() - start < budget.min_time_s:
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return times


def make_batch(sample: np.ndarray, batch_size: int) -> np.ndarray:
    """``batch_size`` rows taken cyclically from ``sample`` (contiguous)."""
    if len(sample) == 0:
        raise UsageError("latency needs at least one sample row")
    check_batch_bytes(sample, batch_size)
    return np.ascontiguousarray(sample[np.arange(batch_size) % len(sample)])


def make_feeds(feeds: Feeds, batch_size: int) -> dict[str, np.ndarray]:
    """``batch_size`` samples taken cyclically from ``feeds``, for every input."""
    if len(feeds) == 0:
        raise UsageError("latency needs at least one sample row")
    for array in feeds.arrays.values():
        check_batch_bytes(array, batch_size)
    return feeds.rows(np.arange(batch_size) % len(feeds))


def measure_latency(
    session: Session,
    sample: Feeds | np.ndarray,
    *,
    batch_sizes: Sequence[int] = (1, 256),
    warmup: int | None = None,
    repeats: int | None = None,
    min_time_s: float | None = None,
    input_name: str | None = None,
) -> LatencyResult:
    """Measure a session's latency per batch size.

    Args:
        session: The session (its thread settings are part of the measurement).
        sample: Feeds for every input, or model-ready rows of a one-input model; batches
            repeat them cyclically.
        batch_sizes: Batch sizes to measure.
        warmup: Untimed runs first; None uses :func:`default_budget` per batch size.
        repeats: Minimum timed runs; None uses the default budget.
        min_time_s: Minimum timed seconds; None uses the default budget.
        input_name: The input an array ``sample`` feeds (default: the only one).

    Returns:
        Median, p90 and mean latency in ms per batch size, and throughput at the largest.

    Raises:
        UsageError: For an empty or non-positive batch size list or a bad budget.
        EvaluationError: When onnxruntime fails to run the model.
    """
    sizes = _check_batch_sizes(batch_sizes)
    if not isinstance(sample, Feeds):
        name = input_name or _only_input(session)
        info = next(i for i in session.inputs if i.name == name)
        sample = Feeds([info], np.asarray(sample))
    stats = []
    for size in sizes:
        base = default_budget(size)
        budget = LatencyBudget(
            warmup=base.warmup if warmup is None else warmup,
            repeats=base.repeats if repeats is None else repeats,
            min_time_s=base.min_time_s if min_time_s is None else min_time_s,
        )
        run = session.runner(make_feeds(sample, size))
        with session.errors(f"run the model at batch size {size}"):
            stats.append(summarize(size, time_runs(run, budget)))
    return LatencyResult(tuple(stats))


def _check_batch_sizes(batch_sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(batch_sizes)
    valid = all(isinstance(b, int | np.integer) and not isinstance(b, bool) for b in sizes)
    if not sizes or not valid or min(sizes) < 1:
        raise UsageError(f"batch sizes must be positive integers, got {list(sizes)}")
    sizes = tuple(int(b) for b in sizes)
    if len(set(sizes)) != len(sizes):
        raise UsageError(f"batch sizes must be distinct, got {list(sizes)}")
    return sizes


def _only_input(session: Session) -> str:
    inputs = session.inputs
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise EvaluationError(
            f"model has {len(inputs)} inputs ({names}); say which to feed (input_name)"
        )
    return inputs[0].name
