"""Latency of several models measured interleaved, so that noise cannot rank them.

Each model has one session. Per batch size, every model is warmed up, then timed in rounds:
each round times a short block of runs of every model in turn (the order rotates, so no model
always runs first), and a block's median is one sample. Rounds go on until every model's
95% bootstrap interval of the median is within ``rel_width`` of it, or ``max_rounds``. Load
that comes and goes then hits every model alike, and two models whose intervals overlap are
reported as indistinguishable rather than ranked by luck.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from onnxopt.errors import UsageError

BLOCK_S = 0.002
"""Seconds of runs per block (at least ``MIN_BLOCK_RUNS`` runs)."""
MIN_BLOCK_RUNS = 3
MAX_BLOCK_RUNS = 200
BOOTSTRAP = 1000
CONFIDENCE = 0.95
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Interval:
    """One model's latency at one batch size over the rounds, in ms per run.

    Attributes:
        median: Median of the per-round block medians.
        low: Lower end of the bootstrap interval of the median (``CONFIDENCE``).
        high: Upper end.
        q1: 25th percentile of the round medians.
        q3: 75th percentile.
        rounds: Rounds measured.
        runs_per_round: Runs in each block.
    """

    median: float
    low: float
    high: float
    q1: float
    q3: float
    rounds: int
    runs_per_round: int

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a value (the latencies are indistinguishable)."""
        return self.low <= other.high and other.low <= self.high

    def as_dict(self) -> dict[str, float | int]:
        """Plain JSON (``median_ms``, ``q1_ms``... as the per-trial figures are named)."""
        return {"median_ms": self.median, "low_ms": self.low, "high_ms": self.high,
                "q1_ms": self.q1, "q3_ms": self.q3, "rounds": self.rounds,
                "runs_per_round": self.runs_per_round}  # fmt: skip


def interval(samples: Sequence[float], runs_per_round: int, seed: int = 0) -> Interval:
    """The median of ``samples`` (ms) with its bootstrap interval and quartiles."""
    x = np.asarray(samples, dtype=np.float64)
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(x, size=(BOOTSTRAP, len(x)), replace=True), axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return Interval(float(median), float(low), float(high), float(q1), float(q3), len(x),
                    runs_per_round)  # fmt: skip


def _block(run: Callable[[], object], n: int) -> float:
    """The median ms of ``n`` timed calls."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000.0


def _runs_per_block(run: Callable[[], object], warmup: int) -> int:
    for _ in range(warmup):
        run()
    t0 = time.perf_counter()
    run()
    once = max(time.perf_counter() - t0, 1e-7)
    return int(min(max(math.ceil(BLOCK_S / once), MIN_BLOCK_RUNS), MAX_BLOCK_RUNS))


def measure_interleaved(
    runners: Mapping[K, Callable[[], object]],
    *,
    min_rounds: int = 5,
    max_rounds: int = 30,
    rel_width: float = 0.05,
    warmup: int = 5,
    seed: int = 0,
) -> dict[K, Interval]:
    """Time every runner (one model at one batch size each) in interleaved rounds.

    Args:
        runners: Per model, a zero-argument call running one batch.
        min_rounds: Rounds before the stop rule is checked.
        max_rounds: Rounds at most.
        rel_width: Stop once every interval's half width is at most this share of its median.
        warmup: Untimed runs of each model first.
        seed: Seed of the bootstrap.

    Raises:
        UsageError: For no runner or bad round counts.
    """
    if not runners or not 1 <= min_rounds <= max_rounds:
        raise UsageError(
            f"interleaved latency needs runners and 1 <= min_rounds <= max_rounds; got "
            f"{len(runners)} runners, {min_rounds}..{max_rounds} rounds"
        )
    keys = list(runners)
    n = {k: _runs_per_block(runners[k], warmup) for k in keys}
    samples: dict[K, list[float]] = {k: [] for k in keys}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(max_rounds):
            shift = r % len(keys)
            for k in keys[shift:] + keys[:shift]:
                samples[k].append(_block(runners[k], n[k]))
            if r + 1 >= min_rounds and _stable(samples, n, rel_width, seed):
                break
    finally:
        if was_enabled:
            gc.enable()
    return {k: interval(samples[k], n[k], seed) for k in keys}


def _stable(samples, n, rel_width: float, seed: int) -> bool:
    for k, x in samples.items():
        iv = interval(x, n[k], seed)
        if (iv.high - iv.low) / 2 > rel_width * iv.median:
            return False
    return True
