"""Latency: warm-up then timed runs, robust statistics; no absolute speeds asserted."""

from __future__ import annotations

import time

import numpy as np
import pytest

from onnxopt.errors import EvaluationError, UsageError
from onnxopt.optimizer.evaluate import (
    LatencyBudget,
    default_budget,
    measure_latency,
)
from onnxopt.optimizer.evaluate.latency import make_batch, summarize, time_runs
from onnxopt.runtime.ort import OrtBackend

load_session = OrtBackend().load


def test_latency_per_batch_size(gemm_builder, gemm_weights, data):
    x, _ = data
    session = load_session(gemm_builder(*gemm_weights))
    result = measure_latency(
        session, x[:3], batch_sizes=(1, 8), warmup=1, repeats=5, min_time_s=0.0
    )
    assert [s.batch_size for s in result.stats] == [1, 8]
    for stats in result.stats:
        assert stats.runs >= 5
        assert 0 < stats.median_ms <= stats.p90_ms
        assert stats.mean_ms > 0
    large = result.for_batch(8)
    assert result.throughput_batch_size == 8
    assert result.throughput_sps == pytest.approx(8 / (large.median_ms / 1000))
    assert set(result.to_dict()) == {"1", "8"}
    with pytest.raises(UsageError, match="batch size 2 was not measured"):
        result.for_batch(2)


def test_min_time_extends_the_run_count(gemm_builder, gemm_weights, data):
    x, _ = data
    session = load_session(gemm_builder(*gemm_weights))
    start = time.perf_counter()
    result = measure_latency(session, x, batch_sizes=(1,), warmup=0, repeats=1, min_time_s=0.05)
    assert time.perf_counter() - start >= 0.05
    assert result.for_batch(1).runs > 1


def test_warmup_runs_are_not_timed():
    calls = []
    times = time_runs(lambda: calls.append(1), LatencyBudget(warmup=4, repeats=7, min_time_s=0))
    assert len(times) == 7 and len(calls) == 11


def test_summary_statistics_by_hand():
    stats = summarize(4, [0.001, 0.002, 0.003, 0.004])
    assert stats.runs == 4
    assert stats.median_ms == pytest.approx(2.5) and stats.mean_ms == pytest.approx(2.5)
    assert stats.p90_ms == pytest.approx(3.7)  # linear interpolation at rank 0.9 * 3 = 2.7
    assert stats.throughput_sps == pytest.approx(1600.0)


def test_the_reported_latency_is_the_median_not_the_mean():
    """One slow run (a page fault, another process) must not move the figure."""
    stats = summarize(1, [0.001, 0.001, 0.002, 0.001, 0.100])
    assert stats.median_ms == pytest.approx(1.0)
    assert stats.mean_ms == pytest.approx(21.0)
    assert stats.throughput_sps == pytest.approx(1000.0)  # from the median


def test_default_budget_is_shorter_for_large_batches():
    small, large = default_budget(1), default_budget(256)
    assert (small.warmup, small.repeats, small.min_time_s) == (10, 50, 0.2)
    assert large.warmup < small.warmup and large.repeats < small.repeats


def test_batches_cycle_through_the_sample():
    sample = np.arange(6, dtype=np.float32).reshape(3, 2)
    batch = make_batch(sample, 5)
    np.testing.assert_array_equal(batch[:, 0], [0, 2, 4, 0, 2])


def test_bad_arguments(gemm_builder, gemm_weights, data):
    x, _ = data
    session = load_session(gemm_builder(*gemm_weights))
    with pytest.raises(UsageError, match="positive integers"):
        measure_latency(session, x, batch_sizes=(0,))
    with pytest.raises(UsageError, match="distinct"):
        measure_latency(session, x, batch_sizes=(1, 1))
    with pytest.raises(UsageError, match="repeats >= 1"):
        measure_latency(session, x, batch_sizes=(1,), repeats=0)


def test_fixed_batch_model_cannot_run_other_sizes(gemm_builder, gemm_weights, data):
    x, _ = data
    session = load_session(gemm_builder(*gemm_weights, batch=1))
    with pytest.raises(EvaluationError, match="at batch size 4: INVALID_ARGUMENT"):
        measure_latency(session, x, batch_sizes=(4,), warmup=0, repeats=1, min_time_s=0)
