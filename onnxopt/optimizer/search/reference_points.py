"""The points a search's models are judged against: the fp32 base model and onnxruntime's
``quantize_static`` model (``[search.report] quantize_static``).

Each is measured like a trial on the validation split (same metrics, same latency plan,
under the run directory's latency lock; feasibility from the search's constraints) and like
an exported model on the test split. The figures are stored with the study (user attr
``reference_points``, keyed by the base model's sha256), so a resumed or re-reported search
measures them once. ``quantize_static`` is written to ``RUN_DIR/quantize_static.onnx``; a
model onnxruntime's quantizer refuses is recorded with its reason, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from onnxopt.errors import OnnxoptError, first_line
from onnxopt.optimizer.quantization.ort_static import quantize_static_ort
from onnxopt.optimizer.search.locks import LATENCY_LOCK, FileLock

if TYPE_CHECKING:
    from onnxopt.optimizer.search.context import SearchContext
    from onnxopt.optimizer.search.run import SearchResult

ATTR = "reference_points"
"""The study user attr holding the measured reference points."""

STATIC_FILE = "quantize_static.onnx"


def _quiet(_: str) -> None:
    """Discards progress lines."""


def _measure(ctx: SearchContext, baseline: dict, model: onnx.ModelProto) -> dict[str, Any]:
    """Validation metrics (latency always), constraint values and test metrics of a model."""
    evaluator = ctx.evaluator.for_trials(
        baseline, ctx.reference(), FileLock(ctx.run_dir / LATENCY_LOCK)
    )
    score = evaluator.measure(model, latency=False)
    loaded = evaluator.measurer.load(model)
    with evaluator.latency_lock:
        timed, _ = evaluator.measurer.latency_metrics(loaded, evaluator.plan)
    validation = {**score.metrics, **timed}
    limit = ctx.config.search.constraints.max_latency_ms
    constraints = dict(score.constraints)
    if limit is not None:
        constraints["latency"] = validation["latency"] - limit
    with evaluator.latency_lock:
        test = ctx.test_measurer().measure(model, latency=evaluator.plan).metrics
    return {
        "validation": validation,
        "test": test,
        "constraints": constraints,
        "feasible": all(v <= 0 for v in constraints.values()),
    }


def _quantize_static(ctx: SearchContext, baseline: dict) -> dict[str, Any]:
    path = ctx.run_dir / STATIC_FILE
    try:
        quantize_static_ort(
            ctx.builder.base, ctx.dataset.calibration.x, path,
            fixed_inputs=ctx.config.model.fixed_values(),
        )  # fmt: skip
        point = _measure(ctx, baseline, onnx.load(str(path)))
    except OnnxoptError as exc:
        return {"error": first_line(exc), "variant": "qdq"}
    return {**point, "path": str(path), "variant": "qdq"}


def reference_points(
    result: SearchResult, say: Callable[[str], None] = _quiet
) -> dict[str, dict[str, Any]]:
    """The fp32 and (when configured) ``quantize_static`` points of a finished search.

    Returns:
        ``{"fp32": point, "quantize_static": point}``; a point holds ``validation`` and
        ``test`` metrics, ``constraints`` and ``feasible`` (or ``error`` when onnxruntime's
        quantizer failed).
    """
    ctx = result.context
    sha = ctx.base_sha256()
    stored = result.study.user_attrs.get(ATTR) or {}
    if stored.get("base_sha256") != sha:
        stored = {"base_sha256": sha}
    points = dict(stored)
    if "fp32" not in points:
        say("measuring the fp32 base model on the test split (for the report)")
        points["fp32"] = _measure(ctx, result.baseline, ctx.builder.base)
    wanted = ctx.config.search.report.quantize_static
    static = points.get("quantize_static")
    if wanted and (static is None or not _on_disk(static)):
        say("quantizing with onnxruntime quantize_static (per-tensor QDQ) and measuring it")
        points["quantize_static"] = _quantize_static(ctx, result.baseline)
    if points != stored:
        result.study.set_user_attr(ATTR, points)
    if not wanted:
        points.pop("quantize_static", None)
    return {k: v for k, v in points.items() if k != "base_sha256"}


def _on_disk(point: dict[str, Any]) -> bool:
    """Whether a stored point still describes a file on disk (or a recorded failure)."""
    return "error" in point or Path(point.get("path", "")).is_file()
