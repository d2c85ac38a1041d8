"""Preparing a user's ONNX file for ``onnxopt export MODEL.onnx -o prepared.onnx``.

Every repair of :func:`~onnxopt.exporters.user_model.prepare_user_model` (names, shapes, the
batch axis, BatchNorm folding, constant folding), the opset converted to ``opset`` (up or
down, as for a torch module), and the written file compared with the original at batch
sizes 1 and 7 (the original's fixed batch when it has one), by onnxruntime or, for an opset
onnxruntime no longer runs, onnx's reference evaluator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from onnxopt.errors import ModelLoadError
from onnxopt.exporters.conversion_check import check_unchanged
from onnxopt.exporters.opsets import check_opset
from onnxopt.exporters.prepare import prepare_model
from onnxopt.exporters.user_model import DEFAULTS, Preparation, prepare_user_model
from onnxopt.graph import default_opset
from onnxopt.model_io import load_onnx, save_onnx
from onnxopt.runtime.io import PROBE_SIZE, graph_inputs

CHECK_BATCHES = (1, 7)


@dataclass(frozen=True)
class OnnxPrepareResult:
    """What preparing a user's ONNX model changed."""

    path: Path
    opset_before: int
    opset: int
    batchnorms_folded: int
    batchnorms_left: int
    max_abs_diff: float
    notes: tuple[str, ...] = ()


def prepare_onnx_file(
    source: Path, target: Path, *, opset: int, preparation: Preparation = DEFAULTS
) -> OnnxPrepareResult:
    """Repair, fold and convert ``source`` to ``opset``; check the outputs are unchanged.

    Raises:
        UsageError: ``opset`` is outside the range the torch path accepts.
        ModelLoadError: The file cannot be read or prepared (see
            :func:`~onnxopt.exporters.user_model.prepare_user_model`), or the outputs
            cannot be compared (a symbolic dimension whose size the check cannot guess).
    """
    check_opset(opset)
    original = load_onnx(source)
    before = default_opset(original)
    preparation = dataclasses.replace(preparation, opset=opset, lower=True, fold=False)
    repaired = prepare_user_model(original, str(source), preparation)
    prepared = prepare_model(repaired.model)  # constant folding too, even without BatchNorm
    check = check_unchanged(
        original, prepared.model, str(source), "preparing the model", batches=CHECK_BATCHES
    )
    if check.not_compared:
        hint = _shape_hint(original)
        raise ModelLoadError(
            f"{source}: the prepared model cannot be checked against the original: "
            + (hint or f"{check.not_compared}; export a model onnxruntime runs")
        )
    save_onnx(prepared.model, target)
    return OnnxPrepareResult(
        Path(target),
        before,
        default_opset(prepared.model),
        prepared.batchnorms_folded,
        prepared.batchnorms_left,
        check.max_abs_diff,
        repaired.notes,
    )


def _shape_hint(model) -> str | None:
    """How to give the sizes of symbolic dimensions the check ran at PROBE_SIZE."""
    for info in graph_inputs(model):
        symbolic = [f"{d!r} (axis {i})" for i, d in enumerate(info.shape)
                    if i and not isinstance(d, int)]  # fmt: skip
        if symbolic:
            dims = ",".join(
                str(d) if isinstance(d, int) else ("1" if not i else f"<{d}>")
                for i, d in enumerate(info.shape)
            )
            return (
                f"input {info.name!r} has dynamic dimension {', '.join(symbolic)} and the model "
                f"does not run with it at {PROBE_SIZE}; give its size with --input-shape "
                f"{info.name}={dims}"
            )
    return None
