"""The metric registry: the one place metric names, directions, costs and formulas live.

Config validation (objectives, selection rules), the measurement pipeline, the search's
objectives and constraints, and the reports all read :data:`METRICS`; no metric name is
spelled anywhere else. A metric has a cost tier, which orders the measurement (cheap first):

* ``model``: from the model alone (size, bit widths), no run;
* ``outputs``: from one pass of the model over the split (accuracy, loss);
* ``latency``: from timing runs; ``latency`` is the first measured batch size and
  ``latency_b<N>`` every batch size ``N`` (:func:`metric` resolves those names).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from onnxopt.errors import UsageError, did_you_mean

Direction = Literal["maximize", "minimize"]
Tier = Literal["model", "outputs", "latency"]
TIERS: tuple[Tier, ...] = ("model", "outputs", "latency")
"""Cost tiers, cheapest first."""


@dataclass(frozen=True)
class MetricInputs:
    """What a metric formula may read.

    Attributes:
        scores: ``(N, C)`` class scores on the split (``outputs`` tier).
        labels: ``N`` integer labels.
        log_probabilities: ``(N, C)`` log-probabilities from the scores.
        size_bytes: The model's bytes on disk (serialized size for an in-memory model).
        average_bitwidth: Parameter-weighted effective bits.
    """

    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    log_probabilities: np.ndarray | None = None
    size_bytes: float | None = None
    average_bitwidth: float | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One metric.

    Attributes:
        name: The name in configs, trial attributes and reports.
        direction: Whether larger (``maximize``) or smaller values are better.
        tier: Cost tier (see the module docstring).
        unit: Unit for reports (empty for a plain number or a fraction).
        description: One line for reports and ``--help``.
        group: ``software`` (task quality) or ``hardware`` (cost), the lab's two tables.
        needs: What the data must hold (``labels``).
        compute: The formula over :class:`MetricInputs` (None: the latency stage sets it).
    """

    name: str
    direction: Direction
    tier: Tier
    unit: str
    description: str
    group: Literal["software", "hardware"]
    needs: frozenset[str] = field(default_factory=frozenset)
    compute: Callable[[MetricInputs], float] | None = None

    def worst(self) -> float:
        """The worst possible value (a metric that could not be measured scores this)."""
        return -np.inf if self.direction == "maximize" else np.inf


def _accuracy(m: MetricInputs) -> float:
    assert m.scores is not None and m.labels is not None
    return float((m.scores.argmax(axis=1) == m.labels).mean())


def _loss(m: MetricInputs) -> float:
    assert m.log_probabilities is not None and m.labels is not None
    return float(-m.log_probabilities[np.arange(len(m.labels)), m.labels].mean())


def _size(m: MetricInputs) -> float:
    assert m.size_bytes is not None
    return float(m.size_bytes)


def _bitwidth(m: MetricInputs) -> float:
    assert m.average_bitwidth is not None
    return float(m.average_bitwidth)


def _density(m: MetricInputs) -> float:
    return 32.0 / _bitwidth(m)


LABELS = frozenset({"labels"})

METRICS: Mapping[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("accuracy", "maximize", "outputs", "", "top-1 accuracy", "software",
                   LABELS, _accuracy),
        MetricSpec("loss", "minimize", "outputs", "nats", "mean cross-entropy", "software",
                   LABELS, _loss),
        MetricSpec("size", "minimize", "model", "bytes", "bytes on disk", "hardware",
                   compute=_size),
        MetricSpec("average_bitwidth", "minimize", "model", "bits",
                   "parameter-weighted effective bits", "hardware", compute=_bitwidth),
        MetricSpec("memory_density", "maximize", "model", "x", "32 / average bit width",
                   "hardware", compute=_density),
        MetricSpec("latency", "minimize", "latency", "ms",
                   "median ms per run at the first batch size", "hardware"),
    )
}  # fmt: skip
"""Every built-in metric by name."""

_LATENCY_AT = re.compile(r"^latency_b([1-9][0-9]*)$")


def metric(name: str) -> MetricSpec:
    """The spec of a metric name (``latency_b<N>`` is latency at batch size ``N``).

    Raises:
        UsageError: For an unknown name, with the closest registered names.
    """
    if name in METRICS:
        return METRICS[name]
    if _LATENCY_AT.match(name):
        base = METRICS["latency"]
        return MetricSpec(name, base.direction, base.tier, base.unit,
                          f"median ms per run at batch size {name[9:]}", base.group)  # fmt: skip
    raise UsageError(f"unknown metric {name!r}; {did_you_mean(name, [*METRICS, 'latency_b256'])}")


def known(name: str) -> bool:
    """Whether ``name`` is a metric (see :func:`metric`)."""
    return name in METRICS or bool(_LATENCY_AT.match(name))


def direction(name: str) -> Direction:
    """The direction of a metric name."""
    return metric(name).direction


def latency_name(batch_size: int) -> str:
    """The metric name of the latency at one batch size."""
    return f"latency_b{batch_size}"


def metric_names() -> tuple[str, ...]:
    """The registered names (for config validation and hints)."""
    return tuple(METRICS)
