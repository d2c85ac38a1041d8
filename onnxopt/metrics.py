"""The metric registry: the one place metric names, directions, needs and formulas live.

Config validation (objectives, constraints, selection rules), the measurement pipeline, the
search's objectives and the reports read :data:`METRICS` and :data:`TASKS`; no metric name
is spelled anywhere else. A metric has a cost tier, which orders the measurement (cheap
first):

* ``model``: from the model alone (size, bit widths), no run;
* ``outputs``: from one pass of the model over the split (accuracy, mse, fidelity...);
* ``latency``: from timing runs; ``latency`` is the first measured batch size and
  ``latency_b<N>`` every batch size ``N`` (:func:`metric` resolves those names).

What an ``outputs`` metric needs is declared: ``labels`` (class labels), ``targets``
(regression targets) or ``reference`` (the fp32 base model's outputs on the same samples:
fidelity metrics need no labels at all). User metrics (``[search.metrics.NAME] function =
"pkg.mod:fn"`` or ``"path/file.py:fn"``) are called as ``fn(outputs, targets) -> float`` with
the scored output ``(N, ...)`` and the labels/targets (None for unlabelled data).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from onnxopt.errors import MetricError, UsageError, did_you_mean

Direction = Literal["maximize", "minimize"]
Tier = Literal["model", "outputs", "latency"]
TIERS: tuple[Tier, ...] = ("model", "outputs", "latency")
"""Cost tiers, cheapest first."""


@dataclass(frozen=True)
class MetricInputs:
    """What a metric formula may read.

    Attributes:
        outputs: The scored output on the split, ``(N, ...)``.
        scores: ``(N, C)`` class scores (classification; two columns for a binary output).
        labels: ``N`` integer class labels.
        targets: Regression targets ``(N,)`` or ``(N, d)``.
        reference: The fp32 base model's scored output on the same samples.
        log_probabilities: ``(N, C)`` log-probabilities from the scores.
        size_bytes: The model's bytes on disk (serialized size for an in-memory model).
        average_bitwidth: Parameter-weighted effective bits.
    """

    outputs: np.ndarray | None = None
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None
    targets: np.ndarray | None = None
    reference: np.ndarray | None = None
    log_probabilities: np.ndarray | None = None
    size_bytes: float | None = None
    average_bitwidth: float | None = None


Formula = Callable[[MetricInputs, Mapping[str, Any]], float]


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
        needs: What it reads besides the outputs: ``labels``, ``targets``, ``reference``.
        params: Parameters a config may set, with their defaults (``top_k_accuracy``: k).
        compute: The formula (None: the latency stage sets it).
        counted: The value is a share of the samples (k of n right, agreeing...): a drop
            of it is a whole number of samples and constraints compare in samples
            (:func:`allowed_samples`).
    """

    name: str
    direction: Direction
    tier: Tier
    unit: str
    description: str
    group: Literal["software", "hardware"]
    needs: frozenset[str] = field(default_factory=frozenset)
    params: Mapping[str, Any] = field(default_factory=dict)
    compute: Formula | None = None
    counted: bool = False

    def worst(self) -> float:
        """The worst possible value (a metric that could not be measured scores this)."""
        return -np.inf if self.direction == "maximize" else np.inf


def _need(value: np.ndarray | None, what: str) -> np.ndarray:
    assert value is not None, what  # the pipeline computes only metrics whose needs are met
    return value


def _accuracy(m: MetricInputs, p: Mapping[str, Any]) -> float:
    return float((_need(m.scores, "scores").argmax(axis=1) == _need(m.labels, "labels")).mean())


def _top_k(m: MetricInputs, p: Mapping[str, Any]) -> float:
    scores, labels = _need(m.scores, "scores"), _need(m.labels, "labels")
    k = min(int(p.get("k", 5)), scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def _macro_f1(m: MetricInputs, p: Mapping[str, Any]) -> float:
    scores, labels = _need(m.scores, "scores"), _need(m.labels, "labels")
    predicted = scores.argmax(axis=1)
    f1 = []
    for c in np.union1d(labels, predicted):
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1))


def _binary_accuracy(m: MetricInputs, p: Mapping[str, Any]) -> float:
    scores = _need(m.scores, "scores")
    if scores.shape[1] != 2:
        raise UsageError(
            f"binary_accuracy scores a binary output, but the model scores {scores.shape[1]} "
            "classes; use accuracy"
        )
    return _accuracy(m, p)


def _loss(m: MetricInputs, p: Mapping[str, Any]) -> float:
    logp, labels = _need(m.log_probabilities, "log-probabilities"), _need(m.labels, "labels")
    return float(-logp[np.arange(len(labels)), labels].mean())


def _pairs(m: MetricInputs, other: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    out = _need(m.outputs, "outputs").astype(np.float64)
    ref = _need(other, what).astype(np.float64)
    n = len(out)
    out, ref = out.reshape(n, -1), ref.reshape(n, -1)
    if out.shape != ref.shape:
        raise UsageError(
            f"the output has {out.shape[1]} values per sample but the {what} {ref.shape[1]}; "
            "they must match"
        )
    return out, ref


def _mse(m: MetricInputs, p: Mapping[str, Any]) -> float:
    out, y = _pairs(m, m.targets, "targets")
    return float(np.mean((out - y) ** 2))


def _mae(m: MetricInputs, p: Mapping[str, Any]) -> float:
    out, y = _pairs(m, m.targets, "targets")
    return float(np.mean(np.abs(out - y)))


def _r2(m: MetricInputs, p: Mapping[str, Any]) -> float:
    out, y = _pairs(m, m.targets, "targets")
    total = np.sum((y - y.mean(axis=0)) ** 2)
    return float(1.0 - np.sum((y - out) ** 2) / total) if total > 0 else 0.0


def _cosines(m: MetricInputs) -> np.ndarray:
    out, ref = _pairs(m, m.reference, "reference")
    norms = np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1)
    dots = np.sum(out * ref, axis=1)
    # two zero vectors are the same vector; one zero vector is orthogonal to anything
    return np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), (out == ref).all(axis=1))


def _cosine_mean(m: MetricInputs, p: Mapping[str, Any]) -> float:
    return float(_cosines(m).mean())


def _cosine_min(m: MetricInputs, p: Mapping[str, Any]) -> float:
    return float(_cosines(m).min())


def _agreement(m: MetricInputs, p: Mapping[str, Any]) -> float:
    out, ref = _pairs(m, m.reference, "reference")
    return float((out.argmax(axis=1) == ref.argmax(axis=1)).mean())


def _max_abs_error(m: MetricInputs, p: Mapping[str, Any]) -> float:
    out, ref = _pairs(m, m.reference, "reference")
    return float(np.max(np.abs(out - ref)))


def _size(m: MetricInputs, p: Mapping[str, Any]) -> float:
    assert m.size_bytes is not None
    return float(m.size_bytes)


def _bitwidth(m: MetricInputs, p: Mapping[str, Any]) -> float:
    assert m.average_bitwidth is not None
    return float(m.average_bitwidth)


def _density(m: MetricInputs, p: Mapping[str, Any]) -> float:
    return 32.0 / _bitwidth(m, p)


LABELS = frozenset({"labels"})
TARGETS = frozenset({"targets"})
REFERENCE = frozenset({"reference"})

METRICS: Mapping[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("accuracy", "maximize", "outputs", "", "top-1 accuracy", "software",
                   LABELS, compute=_accuracy, counted=True),
        MetricSpec("top_k_accuracy", "maximize", "outputs", "", "label among the k best scores",
                   "software", LABELS, {"k": 5}, _top_k, counted=True),
        MetricSpec("macro_f1", "maximize", "outputs", "", "F1 averaged over classes",
                   "software", LABELS, compute=_macro_f1),
        MetricSpec("binary_accuracy", "maximize", "outputs", "",
                   "accuracy of a binary output (p > 0.5, logit > 0)", "software", LABELS,
                   compute=_binary_accuracy, counted=True),
        MetricSpec("loss", "minimize", "outputs", "nats", "mean cross-entropy", "software",
                   LABELS, compute=_loss),
        MetricSpec("mse", "minimize", "outputs", "", "mean squared error", "software", TARGETS,
                   compute=_mse),
        MetricSpec("mae", "minimize", "outputs", "", "mean absolute error", "software", TARGETS,
                   compute=_mae),
        MetricSpec("r2", "maximize", "outputs", "", "coefficient of determination", "software",
                   TARGETS, compute=_r2),
        MetricSpec("cosine_to_reference", "maximize", "outputs", "",
                   "mean cosine similarity to the fp32 model's outputs", "software", REFERENCE,
                   compute=_cosine_mean),
        MetricSpec("cosine_to_reference_min", "maximize", "outputs", "",
                   "smallest cosine similarity to the fp32 model's outputs", "software",
                   REFERENCE, compute=_cosine_min),
        MetricSpec("agreement", "maximize", "outputs", "",
                   "argmax agreement with the fp32 model", "software", REFERENCE,
                   compute=_agreement, counted=True),
        MetricSpec("max_abs_error", "minimize", "outputs", "",
                   "largest |output - fp32 output|", "software", REFERENCE,
                   compute=_max_abs_error),
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


@dataclass(frozen=True)
class TaskSpec:
    """What a model does, and the metrics measured for it when none are named.

    Attributes:
        name: The config name (``[model] task``).
        defaults: The ``outputs``-tier metrics measured by default.
        labels: What the data's ``y`` must be (``classes``, ``values`` or None: no labels).
    """

    name: str
    defaults: tuple[str, ...]
    labels: str | None


TASKS: Mapping[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("classification", ("accuracy", "loss"), "classes"),
        TaskSpec("regression", ("mse", "mae", "r2"), "values"),
        TaskSpec("embedding", ("cosine_to_reference", "cosine_to_reference_min",
                               "max_abs_error"), None),
        TaskSpec("custom", (), None),
    )
}  # fmt: skip
"""Every task by name."""

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


COUNT_TOLERANCE = 1e-9
"""Slack for ``limit * n`` read from a decimal config (0.02 * 400 is 8.000000000000002)."""


def allowed_samples(limit: float, n: int) -> int:
    """How many of ``n`` samples a counted metric may lose under a drop limit (a fraction):
    ``floor(limit * n + 1e-9)``, so a drop of exactly the limit is allowed."""
    return math.floor(limit * n + COUNT_TOLERANCE)


def samples_of(value: float, n: int) -> int:
    """The whole number of samples a counted metric's value (a share of ``n``) stands for."""
    return round(value * n)


def known(name: str) -> bool:
    """Whether ``name`` is a built-in metric (see :func:`metric`)."""
    return name in METRICS or bool(_LATENCY_AT.match(name))


def direction(name: str) -> Direction:
    """The direction of a metric name."""
    return metric(name).direction


def latency_name(batch_size: int) -> str:
    """The metric name of the latency at one batch size."""
    return f"latency_b{batch_size}"


def headline(figures: Mapping[str, Any]) -> str:
    """The task figure a one-line summary shows: the first task metric of :data:`TASKS` in
    ``figures`` (``"accuracy 0.9750"``, ``"mse 0.4724"``), or "" when there is none."""
    for task in TASKS.values():
        for name in task.defaults:
            if isinstance(figures.get(name), int | float):
                return f"{name} {figures[name]:.4f}"
    return ""


def metric_names() -> tuple[str, ...]:
    """The registered names (for config validation and hints)."""
    return tuple(METRICS)


def task_names() -> tuple[str, ...]:
    """The registered tasks."""
    return tuple(TASKS)


def user_metric(name: str, fn: Callable[..., Any], direction: Direction) -> MetricSpec:
    """A metric from a user's function ``fn(outputs, targets) -> float``."""

    def compute(m: MetricInputs, p: Mapping[str, Any]) -> float:
        targets = m.labels if m.labels is not None else m.targets
        try:
            value = fn(_need(m.outputs, "outputs"), targets)
        except Exception as exc:  # the user's code may raise anything: one line names it
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise MetricError(
                f"metric {name!r}: its function raised {type(exc).__name__}"
                f"{': ' + detail if detail else ''}; it is called as fn(outputs, targets)"
            ) from None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise MetricError(
                f"metric {name!r}: the function returned {type(value).__name__}, not a number"
            ) from None
        if not np.isfinite(number):
            raise MetricError(f"metric {name!r}: the function returned {number}, not a finite "
                              "number")  # fmt: skip
        return number

    return MetricSpec(name, direction, "outputs", "", f"user metric {name}", "software",
                      compute=compute)  # fmt: skip


def resolve(
    names: tuple[str, ...] | list[str],
    task: str,
    *,
    have: frozenset[str],
    user: Mapping[str, MetricSpec] | None = None,
) -> list[MetricSpec]:
    """The ``outputs``-tier metrics to compute: the task's defaults whose needs the data meet,
    plus every metric named (whose needs must be met).

    Args:
        names: Metrics asked for (objectives, constraints, ``--metric``); other tiers ignored.
        task: A :data:`TASKS` name.
        have: What the measurement can give: ``labels``, ``targets``, ``reference``.
        user: User metrics by name.

    Raises:
        UsageError: An unknown metric (closest names listed) or one whose needs are not met
            (what is missing named).
    """
    user = dict(user or {})
    chosen: dict[str, MetricSpec] = {}
    for name in TASKS[task].defaults:
        spec = METRICS[name]
        if spec.needs <= have:
            chosen[name] = spec
    for name in names:
        spec = user[name] if name in user else metric(name)
        if spec.tier != "outputs":
            continue
        missing = spec.needs - have
        if missing:
            raise UsageError(f"metric {name!r} needs {_NEEDS[next(iter(missing))]}")
        chosen[name] = spec
    return list(chosen.values())


_NEEDS = {
    "labels": "class labels: the data have no integer 'y' array (add one, e.g. np.savez(path, "
    "x=..., y=labels))",
    "targets": "regression targets: the data have no float 'y' array (add one, e.g. "
    "np.savez(path, x=..., y=targets))",
    "reference": "a reference model's outputs: give the fp32 model (--reference BASE.onnx; a "
    "search uses its base model)",
}


def user_metrics(
    configured: Mapping[str, Any], base: Any = None
) -> dict[str, MetricSpec]:
    """The user metrics of a config's ``[search.metrics]`` (entries with ``function``).

    Args:
        configured: Metric name -> its config (``direction``, ``function``).
        base: The config's folder (relative ``file.py`` paths start there).
    """
    from onnxopt.plugins import load_callable

    out = {}
    for name, spec in configured.items():
        if getattr(spec, "function", None):
            fn = load_callable(spec.function, base, what=f"metric {name!r}")
            out[name] = user_metric(name, fn, spec.direction or "maximize")
    return out
