"""Checking that an opset conversion left a model's outputs unchanged.

onnx's version converter rewrites ops whose semantics changed between opsets; a wrong adapter
would silently change what the model computes. Both models are run in onnxruntime on one
small random input of the model's input shape (batch 1, symbolic dimensions taken as 1),
which costs two session creations and only happens when a conversion did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from onnxopt.errors import ModelLoadError
from onnxopt.exporters.diagnostics import shorten
from onnxopt.runtime.io import random_feeds
from onnxopt.runtime.ort import make_session, native_error, quiet_run_options

RTOL = 1e-4
ATOL = 1e-5


def check_conversion(
    original: onnx.ModelProto, converted: onnx.ModelProto, source: str, before: int, after: int
) -> str | None:
    """Run both models on one input; refuse the conversion if their outputs differ.

    Args:
        original: The model before the conversion.
        converted: The model after it.
        source: The file name, for messages.
        before: The original opset, for messages.
        after: The converted opset, for messages.

    Returns:
        None when the outputs were compared and agree; otherwise why they could not be
        compared (neither runtime runs the original model, or an input has no shape).

    Raises:
        ModelLoadError: The converted model does not run, or its outputs differ.
    """
    return check_unchanged(
        original, converted, source, f"converting from opset {before} to {after}",
        fix=f"re-export the model at opset {after}",
    ).not_compared  # fmt: skip


@dataclass(frozen=True)
class OutputCheck:
    """How a changed model's outputs compared with the original's.

    Attributes:
        max_abs_diff: The largest absolute difference over every output compared.
        not_compared: Why the outputs could not be compared (None when they were).
    """

    max_abs_diff: float = 0.0
    not_compared: str | None = None


def check_unchanged(
    original: onnx.ModelProto,
    changed: onnx.ModelProto,
    source: str,
    what: str,
    *,
    fix: str = "report it with the model attached, or pass the repaired file yourself",
    batches: tuple[int, ...] = (1,),
) -> OutputCheck:
    """Run the original (onnxruntime, else onnx's reference evaluator) and the changed model
    (onnxruntime) on random inputs; refuse the change if any output differs.

    Args:
        original: The model before the change.
        changed: The model after it.
        source: The file name, for messages.
        what: The change, for messages ("folding BatchNormalization").
        fix: What the user can do when the change is refused.
        batches: Batch sizes to compare at (a batch the original fixes is used instead).

    Raises:
        ModelLoadError: The changed model does not run, or its outputs differ.
    """
    if any(not i.type.tensor_type.HasField("shape") for i in _inputs(original)):
        return OutputCheck(0.0, "an input has no shape")
    worst = 0.0
    for batch in batches:
        probe = random_feeds(original, batch, like=changed)
        try:
            expected = _run(original, probe)
        except Exception as exc:  # onnxruntime raises its own types; old opsets, odd models
            try:
                expected = _run_reference(original, probe)
            except Exception:  # the reference evaluator lacks some ops and raises anything
                why = "neither onnxruntime nor onnx's reference evaluator runs the original"
                return OutputCheck(worst, f"{why} ({_reason(exc)})")
        try:
            got = _run(changed, probe)
        except Exception as exc:
            raise ModelLoadError(
                f"{source}: after {what}, the model no longer runs in onnxruntime "
                f"({_reason(exc)}); {fix}"
            ) from None
        names = [o.name for o in original.graph.output]
        for name, want, have in zip(names, expected, got, strict=False):
            diff = _difference(np.asarray(want), np.asarray(have))
            if diff is not None:
                raise ModelLoadError(
                    f"{source}: {what} changes output {name!r} (max |diff| {diff:.3g}, "
                    f"tolerance rtol={RTOL}, atol={ATOL}); {fix}"
                )
            worst = max(worst, _max_abs(np.asarray(want), np.asarray(have)))
    return OutputCheck(worst)


def _max_abs(want: np.ndarray, have: np.ndarray) -> float:
    if want.dtype == object or not want.size:
        return 0.0
    return float(np.nanmax(np.abs(want.astype(np.float64) - have.astype(np.float64))))


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def _difference(want: np.ndarray, have: np.ndarray) -> float | None:
    """The largest absolute difference if the outputs differ beyond tolerance, else None."""
    if want.shape != have.shape:
        return float("inf")
    if want.dtype == object or have.dtype == object:  # sequences, maps: compare as values
        return None if want.tolist() == have.tolist() else float("inf")
    a, b = want.astype(np.float64), have.astype(np.float64)
    if np.allclose(b, a, rtol=RTOL, atol=ATOL, equal_nan=True):
        return None
    return float(np.nanmax(np.abs(a - b))) if a.size else float("inf")


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list:
    return make_session(model).run(None, feed, quiet_run_options())


def _run_reference(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list:
    outputs = ReferenceEvaluator(model).run(None, feed)
    assert isinstance(outputs, list)  # a dict only with intermediate=True
    return outputs


def _reason(exc: BaseException) -> str:
    text = str(native_error(exc)).replace("[ONNXRuntimeError] : ", "")
    return shorten(text or type(exc).__name__, 200)
