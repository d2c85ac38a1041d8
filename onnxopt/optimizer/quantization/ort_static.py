"""onnxruntime's own post-training quantization (``quantize_static``), the point to beat.

The search report and ``benchmarks/vs_quantize_static.py`` draw onnxruntime's stock 8-bit
model beside onnxopt's: weights int8 and activations uint8, min-max calibration on the
same calibration split the search uses, per-tensor weights unless asked otherwise. The
variants differ only in how the model is written: ``qdq`` (QuantizeLinear/DequantizeLinear
pairs that onnxruntime fuses into integer kernels) or ``qoperator`` (QLinearMatMul,
QLinearConv, ... nodes). The model is first prepared with ``quant_pre_process`` (shape
inference and graph optimization), as onnxruntime's documentation asks.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from onnxopt.errors import RewriteError, first_line
from onnxopt.model_io import save_onnx
from onnxopt.runtime.io import Feeds, graph_inputs

BATCH = 64
"""Calibration samples per onnxruntime run."""


@dataclass(frozen=True)
class StaticVariant:
    """One way of calling ``quantize_static``.

    Attributes:
        name: The name in reports (``qdq``, ``qoperator``, ``qdq_per_channel``).
        quant_format: ``QuantFormat`` member name.
        per_channel: Per-channel weight scales.
    """

    name: str
    quant_format: str
    per_channel: bool = False


VARIANTS: Mapping[str, StaticVariant] = {
    v.name: v
    for v in (
        StaticVariant("qdq", "QDQ"),
        StaticVariant("qoperator", "QOperator"),
        StaticVariant("qdq_per_channel", "QDQ", per_channel=True),
    )
}
"""The ``quantize_static`` calls onnxopt compares with, by name (``qdq``: the default)."""


class _Reader:
    """onnxruntime's CalibrationDataReader over the calibration feeds, ``BATCH`` at a time."""

    def __init__(self, feeds: Feeds) -> None:
        self._batches = iter([feeds.batch(s, min(s + BATCH, len(feeds)))
                              for s in range(0, len(feeds), BATCH)])  # fmt: skip

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_static_ort(
    model: onnx.ModelProto,
    calibration_x: np.ndarray | Mapping[str, np.ndarray],
    path: Path,
    *,
    variant: str = "qdq",
    fixed_inputs: Mapping[str, Any] | None = None,
) -> Path:
    """Quantize a float model with onnxruntime's ``quantize_static`` and write it to ``path``.

    Args:
        model: The fp32 model (not modified).
        calibration_x: The calibration samples (one array, or one per input name).
        path: Where the quantized model goes (written atomically).
        variant: A name of :data:`VARIANTS`.
        fixed_inputs: Values for inputs the data do not give.

    Raises:
        RewriteError: When onnxruntime's quantizer fails on the model.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    spec = VARIANTS[variant]
    feeds = Feeds(graph_inputs(model), calibration_x, fixed_inputs)
    with tempfile.TemporaryDirectory(prefix="onnxopt-ort-static-") as tmp:
        raw, source = Path(tmp) / "fp32.onnx", Path(tmp) / "prepared.onnx"
        out = Path(tmp) / "quantized.onnx"
        onnx.save_model(model, str(raw))
        try:
            # onnxruntime's recommended first step: shape inference and graph optimization
            quant_pre_process(str(raw), str(source))
            quantize_static(
                str(source), str(out), _Reader(feeds),
                quant_format=getattr(QuantFormat, spec.quant_format),
                per_channel=spec.per_channel, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            )  # fmt: skip
        except Exception as exc:  # onnxruntime's quantizer raises many kinds
            raise RewriteError(
                f"onnxruntime quantize_static ({variant}) failed: {first_line(exc)}"
            ) from None
        return save_onnx(onnx.load(str(out)), Path(path))
