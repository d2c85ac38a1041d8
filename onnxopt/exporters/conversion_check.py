"""Checking that an opset conversion left a model's outputs unchanged.

onnx's version converter rewrites ops whose semantics changed between opsets; a wrong adapter
would silently change what the model computes. Both models are run in onnxruntime on one
small random input of the model's input shape (batch 1, symbolic dimensions taken as 1),
which costs two session creations and only happens when a conversion did.
"""

from __future__ import annotations

import numpy as np
import onnx

from onnxopt.errors import ModelLoadError
from onnxopt.exporters.diagnostics import shorten
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
        compared (onnxruntime cannot run the original model, or its input has no shape).

    Raises:
        ModelLoadError: The converted model does not run, or its outputs differ.
    """
    probe = probe_input(original)
    if probe is None:
        return "the input has no shape"
    try:
        expected = _run(original, probe)
    except Exception as exc:  # onnxruntime raises its own types; old opsets, odd models
        return f"onnxruntime cannot run the original model ({_reason(exc)})"
    fix = f"re-export the model at opset {after}"
    try:
        got = _run(converted, probe)
    except Exception as exc:
        raise ModelLoadError(
            f"{source}: converted from opset {before} to {after}, the model no longer runs "
            f"in onnxruntime ({_reason(exc)}); {fix}"
        ) from None
    names = [o.name for o in original.graph.output]
    for name, want, have in zip(names, expected, got, strict=False):
        worst = _difference(np.asarray(want), np.asarray(have))
        if worst is not None:
            raise ModelLoadError(
                f"{source}: converting from opset {before} to {after} changes output {name!r} "
                f"(max |diff| {worst:.3g}, tolerance rtol={RTOL}, atol={ATOL}); {fix}"
            )
    return None


def probe_input(model: onnx.ModelProto, batch: int = 1) -> dict[str, np.ndarray] | None:
    """A random float32 feed for the model's (first non-weight) input, or None if unshaped."""
    weights = {t.name for t in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in weights)
    tensor_type = graph_input.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.dim_value > 0 else 1 for d in tensor_type.shape.dim]
    if dims and tensor_type.shape.dim[0].dim_value <= 0:
        dims[0] = batch
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    return {graph_input.name: x}


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


def _reason(exc: BaseException) -> str:
    text = str(native_error(exc)).replace("[ONNXRuntimeError] : ", "")
    return shorten(text or type(exc).__name__, 200)
