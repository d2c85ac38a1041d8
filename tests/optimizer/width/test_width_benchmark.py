"""The width benchmark's ratios (its logic only: the benchmark itself is not run here)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module("width_scaling")


def _row(accuracy: float, size: int, b1_ms: float, b256_ms: float) -> dict:
    latency = {"1": {"median_ms": b1_ms}, "256": {"median_ms": b256_ms}}
    return {"accuracy": accuracy, "size_bytes": size, "parameters": size // 4,
            "latency_ms": latency, "bits": 32}  # fmt: skip


def test_accuracy_size_and_latency_are_ratios_to_the_original(bench):
    models = {
        bench.BASE: _row(349 / 360, 8_000, 0.1, 10.0),
        "w0.25-ridge": _row(348 / 360, 500, 0.02, 0.5),
        "w0.125-trunc": {"error": "not measured"},
    }
    ratios = bench.ratios(models)
    assert set(ratios) == {bench.BASE, "w0.25-ridge"}
    row = ratios["w0.25-ridge"]
    assert row["accuracy_ratio"] == pytest.approx(348 / 349)
    assert row["accuracy_diff_pts"] == pytest.approx(-100 / 360)  # the points stay too
    assert row["size_ratio"] == pytest.approx(1 / 16) and row["times_smaller"] == 16
    assert row["speedup_b1"] == pytest.approx(5) and row["speedup_b256"] == pytest.approx(20)
    assert ratios[bench.BASE]["accuracy_ratio"] == 1.0


def test_no_accuracy_ratio_against_an_original_scoring_zero(bench):
    assert bench.accuracy_ratio(0.5, 0.0) is None
