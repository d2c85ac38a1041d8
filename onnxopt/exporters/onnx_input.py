"""Preparing a user's ONNX file: the same BatchNorm folding, opset conversion, parity check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxopt.errors import ExportError, ModelLoadError
from onnxopt.exporters.prepare import prepare_model
from onnxopt.model_io import load_onnx, save_onnx


@dataclass(frozen=True)
class OnnxPrepareResult:
    """What preparing a user's ONNX model changed."""

    path: Path
    opset_before: int
    opset: int
    batchnorms_folded: int
    batchnorms_left: int
    max_abs_diff: float


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset for the default ('') domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _sample(model: onnx.ModelProto, batch: int) -> np.ndarray:
    graph_input = model.graph.input[0]
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim[1:]]
    if not dims or any(d <= 0 for d in dims):
        raise ModelLoadError(
            f"input {graph_input.name!r} has dynamic dimensions other than the "
            "batch; export the model with fixed feature dimensions"
        )
    return np.random.default_rng(0).standard_normal((batch, *dims)).astype(np.float32)


def prepare_onnx_file(source: Path, target: Path, *, opset: int) -> OnnxPrepareResult:
    """Fold BatchNorm, convert to ``opset`` if older, and check outputs are unchanged."""
    original = load_onnx(source)
    before = default_opset(original)
    model = original
    if before < opset:
        try:
            model = onnx.version_converter.convert_version(original, opset)
        except Exception as exc:
            raise ExportError(
                f"{source}: converting opset {before} -> {opset} failed "
                f"({str(exc).splitlines()[0]}); re-export at opset {opset}"
            ) from None
    prepared = prepare_model(model)
    worst = 0.0
    for batch in (1, 7):
        x = _sample(original, batch)
        expected, got = _outputs(original, x), _outputs(prepared.model, x)
        worst = max(worst, float(np.max(np.abs(expected - got))))
        if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise ExportError(f"{source}: prepared model differs from the original by {worst:.3g}")
    save_onnx(prepared.model, target)
    return OnnxPrepareResult(
        Path(target),
        before,
        default_opset(prepared.model),
        prepared.batchnorms_folded,
        prepared.batchnorms_left,
        worst,
    )
