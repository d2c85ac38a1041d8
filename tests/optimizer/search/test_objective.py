"""Objective values from metrics: directions from the registry, the worst for what is missing."""

from __future__ import annotations

import math

from onnxopt.config import validate
from onnxopt.config.search import Search
from onnxopt.optimizer.search.objective import (
    objective_directions,
    objective_names,
    objective_values,
)

QUANT = {"quantization": {"by_type": {"linear": {"weight_width": [4, 8]}}}}


def _search(metrics: dict, **strategy) -> Search:
    return validate(Search, {**QUANT, "metrics": metrics, "strategy": strategy})


def test_directions_come_from_the_metric_registry_unless_configured():
    search = _search({"accuracy": {}, "size": {}, "memory_density": {}, "loss": {"direction":
                      "maximize"}})  # fmt: skip
    assert objective_directions(search) == ["maximize", "minimize", "maximize", "maximize"]
    assert objective_names(search) == ["accuracy", "size", "memory_density", "loss"]


def test_a_metric_that_was_not_measured_is_the_worst_of_its_direction():
    search = _search({"accuracy": {}, "latency": {}})
    assert objective_values(search, {"accuracy": 0.9}) == [0.9, math.inf]
    search = _search({"latency": {}, "accuracy": {}})
    assert objective_values(search, {"latency": 0.5}) == [0.5, -math.inf]


def test_scaled_values_and_the_scaled_sum():
    search = _search({"accuracy": {"scale": 2.0}, "size": {"scale": 0.001}})
    assert objective_values(search, {"accuracy": 0.9, "size": 1000.0}) == [1.8, 1.0]
    summed = _search({"accuracy": {"scale": 2.0}, "size": {"scale": 0.001}},
                     sum_scaled_metrics=True)  # fmt: skip
    assert objective_names(summed) == ["scaled_sum"]
    assert objective_directions(summed) == ["maximize"]
    # maximized metrics add, minimized ones subtract
    assert objective_values(summed, {"accuracy": 0.9, "size": 1000.0}) == [1.8 - 1.0]


def test_a_scaled_sum_missing_a_metric_is_the_worst_sum():
    summed = _search({"accuracy": {}, "latency": {}}, sum_scaled_metrics=True)
    assert objective_values(summed, {"accuracy": 0.99}) == [-math.inf]
