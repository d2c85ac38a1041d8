"""The QONNX / hls4ml files of one exported search trial (``[search.export] formats``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

from onnxopt.config.fpga import Hls4mlOptions
from onnxopt.data.dataset import Split
from onnxopt.errors import OnnxoptError


def export_fpga(
    model: onnx.ModelProto,
    stem: Path,
    formats: Sequence[str],
    options: Hls4mlOptions,
    split: Split,
    *,
    strict: bool,
) -> dict[str, dict]:
    """Write ``stem.qonnx.onnx`` and/or ``stem_hls4ml/`` for the formats asked for.

    Args:
        model: The trial's quantized model.
        stem: ``folder/trial_0007``.
        formats: The export formats (only ``qonnx`` and ``hls4ml`` are handled here).
        options: hls4ml options (``verify`` compiles and compares on the split).
        split: The test split, whose one feature array checks the files (named inputs
            fail each format like any other export problem).
        strict: Raise on failure (``select``); otherwise record the error and go on (a
            search's Pareto export, where one model may not map to an FPGA).

    Returns:
        Format -> what was written and checked, or ``{"error": ...}``.
    """
    from onnxopt.fpga.export import export_hls4ml, export_qonnx

    out: dict[str, dict] = {}
    for fmt in (f for f in formats if f in ("qonnx", "hls4ml")):
        try:
            x = split.array()
            if fmt == "qonnx":
                res = export_qonnx(model, stem.with_name(f"{stem.name}.qonnx.onnx"), x)
                out[fmt] = {"path": str(res.path), "check": res.check.as_dict()}
            else:
                project = export_hls4ml(model, stem.with_name(f"{stem.name}_hls4ml"), options, x)
                out[fmt] = {
                    "path": str(project.directory),
                    "precision": str(project.precision_path),
                    "weight_bits": project.weight_bits,
                    "verify": project.verify.as_dict() if project.verify else None,
                }
        except OnnxoptError as exc:
            if strict:
                raise
            out[fmt] = {"error": str(exc)}
    return out
