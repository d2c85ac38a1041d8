"""Noise-aware latency: interleaved rounds, intervals, a front where overlapping latencies tie,
and the search's re-measurement before export recorded in the manifest."""

from __future__ import annotations

import json
import time

from optuna.distributions import CategoricalDistribution
from optuna.trial import create_trial

from onnxopt.config.search import Search, load_search_config
from onnxopt.optimizer.evaluate.interleaved import Interval, interval, measure_interleaved
from onnxopt.optimizer.search.final_latency import Point, front, ties
from onnxopt.optimizer.search.run import export_best, remeasure_best, run_search, write_remeasured
from onnxopt.report.search_report import write_reports
from tests.optimizer.search.conftest import QUANT_18


def _busy(seconds: float, calls: list | None = None, key=None):
    def run():
        if calls is not None:
            calls.append(key)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return run


def test_rounds_interleave_the_models_and_separate_clear_differences():
    calls: list = []
    result = measure_interleaved(
        {"fast": _busy(0.0001, calls, "fast"), "slow": _busy(0.0006, calls, "slow")},
        min_rounds=3, max_rounds=6, warmup=1,
    )  # fmt: skip
    fast, slow = result["fast"], result["slow"]
    assert 3 <= fast.rounds == slow.rounds <= 6
    assert fast.low <= fast.median <= fast.high and fast.q1 <= fast.median <= fast.q3
    assert fast.median >= 0.1 and slow.median >= 0.6  # a busy wait is never shorter
    assert slow.median > 3 * fast.median and not fast.overlaps(slow)
    # every round times a block of each model, the order rotating (fast slow | slow fast |
    # ...: neighbouring blocks of one model merge), after one warm-up and one sizing call each
    for iv, key in ((fast, "fast"), (slow, "slow")):
        assert calls.count(key) == 2 + iv.rounds * iv.runs_per_round
    timed = calls[4:]
    blocks = [k for i, k in enumerate(timed) if i == 0 or timed[i - 1] != k]
    assert blocks[:2] == ["fast", "slow"] and len(blocks) == fast.rounds + 1


def test_interval_of_constant_samples_is_a_point_and_bootstrap_widens_with_spread():
    flat = interval([2.0] * 9, runs_per_round=5)
    assert (flat.low, flat.median, flat.high, flat.q1, flat.q3) == (2.0,) * 5
    spread = interval([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], runs_per_round=5)
    assert spread.median == 4.0 and spread.q1 == 2.5 and spread.q3 == 5.5
    assert spread.low < 4.0 < spread.high


def _point(number: int, accuracy: float, latency: tuple[float, float, float]) -> Point:
    t = create_trial(values=[accuracy, latency[1]], params={"p": number},
                     distributions={"p": CategoricalDistribution(list(range(10)))})  # fmt: skip
    t.number = number
    low, median, high = latency
    signed = [accuracy, -median]  # accuracy up, latency down
    return Point(t, signed, {"latency": Interval(median, low, high, low, high, 10, 5)})


def test_overlapping_latencies_tie_and_only_a_clear_difference_dominates():
    names = ["accuracy", "latency"]
    a = _point(0, 0.95, (0.90, 1.00, 1.10))
    b = _point(1, 0.95, (0.95, 1.05, 1.15))  # slower by the medians, but within the noise
    c = _point(2, 0.95, (1.90, 2.00, 2.10))  # clearly slower at the same accuracy
    d = _point(3, 0.97, (1.90, 2.00, 2.10))  # slower but more accurate: a trade-off
    kept = front([a, b, c, d], names)
    assert [p.trial.number for p in kept] == [0, 1, 3]
    assert ties(kept, names) == [{"faster": 0, "tied": 1, "metrics": ["latency"]}]


SEARCH = QUANT_18 + """
[search.strategy]
sampler = "brute-force"
n_trials = 18
[search.metrics.accuracy]
[search.metrics.size]
[search.metrics.latency]
[search.evaluation]
batch_sizes = [1, 32]
remeasure_rounds = 8
[search.export]
formats = ["onnx"]
"""


def test_the_front_is_timed_again_before_export_and_recorded(write_config, tmp_path):
    config = load_search_config(write_config(SEARCH))
    result = run_search(config, run_dir=tmp_path / "run", progress=False)
    before = [t.number for t in result.best]
    assert all("latency_spread" in t.user_attrs for t in result.best)
    remeasure_best(result)
    again = result.remeasured
    assert again is not None and again.front_before == before
    assert [t.number for t in result.best] == again.front_after
    kept = result.study.user_attrs["remeasured"]  # status reads it from the study
    assert kept["front_after"] == again.front_after and kept["front_before"] == before
    assert {str(n) for n in again.front_after} <= set(again.latency) - {"fp32"}
    for per_batch in again.latency.values():
        assert set(per_batch) == {"1", "32"}
        for iv in per_batch.values():
            assert 5 <= iv["rounds"] <= 8 and iv["low_ms"] <= iv["median_ms"] <= iv["high_ms"]
    exported = export_best(result)
    assert [e.number for e in exported] == again.front_after
    write_reports(result)
    write_remeasured(result)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    recorded = manifest["latency_remeasured"]
    assert recorded["front_after"] == again.front_after and recorded["threads"] == 1
    assert recorded["integer_path"]["class"] and len(recorded["load_average_before"]) == 3
    assert json.loads((tmp_path / "run" / "latency.json").read_text()) == recorded


def test_remeasure_rounds_0_turns_it_off():
    search = Search.model_validate({"quantization": {"by_type": {"linear": {
        "weight_width": [4, 8]}}}, "metrics": {"accuracy": {}},
        "evaluation": {"remeasure_rounds": 0}})  # fmt: skip
    assert search.evaluation.remeasure_rounds == 0
