"""Preparing a user's ONNX file: the same BatchNorm folding, opset conversion, parity check.

``opset`` means the same as for a torch module: the opset written, within the same range;
a newer model is converted down (and its outputs checked) like an older one is converted up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxopt.errors import ExportError, ModelLoadError, first_line
from onnxopt.exporters.opsets import check_opset
from onnxopt.exporters.prepare import prepare_model
from onnxopt.exporters.user_model import prepare_user_model
from onnxopt.graph import default_opset
from onnxopt.model_io import load_onnx, save_onnx
from onnxopt.runtime.ort import make_session, native_error, ort_errors, quiet_run_options


@dataclass(frozen=True)
class OnnxPrepareResult:
    """What preparing a user's ONNX model changed."""

    path: Path
    opset_before: int
    opset: int
    batchnorms_folded: int
    batchnorms_left: int
    max_abs_diff: float


def _outputs(model: onnx.ModelProto, name: str, x: np.ndarray, source: Path) -> np.ndarray:
    try:
        session = make_session(model, error=ExportError)
        with ort_errors("run the model", ExportError):
            return session.run(None, {name: x}, quiet_run_options())[0]
    except ExportError as exc:
        raise ExportError(
            f"{source}: onnxruntime could not run the model ({first_line(native_error(exc))})"
        ) from None


def _samples(model: onnx.ModelProto, source: Path) -> list[np.ndarray]:
    """Random inputs at batch sizes 1 and 7 (or the model's fixed batch size)."""
    graph_input = model.graph.input[0]
    dims = list(graph_input.type.tensor_type.shape.dim)
    symbolic = [
        f"{d.dim_param or '?'!r} (axis {i})" for i, d in enumerate(dims) if i and d.dim_value <= 0
    ]
    if not dims or symbolic:
        where = f" {', '.join(symbolic)}" if symbolic else "s (it has no shape)"
        raise ModelLoadError(
            f"{source}: input {graph_input.name!r} has dynamic dimension{where}; checking the "
            "prepared model needs the sample shape: re-export the model with static "
            "dimensions except the batch"
        )
    shape = [d.dim_value for d in dims[1:]]
    batches = (dims[0].dim_value,) if dims[0].dim_value > 0 else (1, 7)
    rng = np.random.default_rng(0)
    return [rng.standard_normal((b, *shape)).astype(np.float32) for b in batches]


def prepare_onnx_file(source: Path, target: Path, *, opset: int) -> OnnxPrepareResult:
    """Fold BatchNorm, convert to ``opset`` (up or down), and check outputs are unchanged.

    Raises:
        UsageError: ``opset`` is outside the range the torch path accepts.
        ModelLoadError: The file cannot be read or prepared (see
            :func:`~onnxopt.exporters.user_model.prepare_user_model`), or its input has
            dynamic dimensions other than the batch.
        ExportError: The prepared model computes something else than the original.
    """
    check_opset(opset)
    original = load_onnx(source)
    before = default_opset(original)
    model = prepare_user_model(original, str(source), opset=opset, lower=True).model
    samples = _samples(model, source)  # before the slow part: refuse dynamic shapes first
    prepared = prepare_model(model)
    worst = 0.0
    name = model.graph.input[0].name
    for x in samples:
        expected = _outputs(original, name, x, source)
        got = _outputs(prepared.model, name, x, source)
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
