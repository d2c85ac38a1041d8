"""Activation ranges from calibration data, observed by onnxruntime's calibrators.

``minmax`` keeps the observed extremes. ``percentile`` (onnxruntime's
``PercentileCalibrater``, a 2048-bin histogram per tensor, ``symmetric=False``) keeps the
central ``p`` % of the values, cutting ``(100 - p) / 2`` % from each tail, trading rare
saturation for finer steps; a non-negative (ReLU) tensor has no lower tail to cut, so only
``(100 - p) / 2`` % of its values lie above the range. ``percentile = 100`` means minmax
(onnxruntime's histogram would return the left edge of the top bin, below the maximum).
Ranges are computed once per base model and reused for every candidate built from it.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from onnxopt.errors import RewriteError, first_line
from onnxopt.runtime.contained import NativeCrash, check_loads, stage
from onnxopt.runtime.io import Feeds, graph_inputs
from onnxopt.runtime.ort import session_settings


@dataclass(frozen=True)
class Range:
    """Observed range of one tensor."""

    low: float
    high: float

    @property
    def max_abs(self) -> float:
        return max(abs(self.low), abs(self.high))

    @property
    def non_negative(self) -> bool:
        return self.low >= 0.0


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over in-memory batches of feeds."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]]) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def calibrate(
    model: onnx.ModelProto,
    x: Feeds | np.ndarray,
    n: int | None = None,
    *,
    method: str = "minmax",
    percentile: float = 99.999,
    batch_size: int = 64,
) -> dict[str, Range]:
    """Observe the range of every activation tensor of ``model`` on samples ``x``.

    Args:
        model: a float model; it is not modified.
        x: feeds for every input, or one array shaped for the model's single input.
        n: how many samples to use (all by default).
        method: ``minmax`` or ``percentile``.
        percentile: the percentile kept by ``percentile`` calibration.
        batch_size: samples per onnxruntime run.

    Returns:
        Tensor name -> observed range, for every tensor the calibrator saw.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method == "percentile" and percentile >= 100.0:
        method = "minmax"
    options = {"percentile": percentile, "symmetric": False} if method == "percentile" else {}
    feeds = x if isinstance(x, Feeds) else Feeds(graph_inputs(model), x)
    n = len(feeds) if n is None else min(n, len(feeds))
    with tempfile.TemporaryDirectory(prefix="onnxopt-calib-") as tmp:
        source = Path(tmp) / "model.onnx"
        onnx.save_model(model, str(source))
        try:
            with stage("calibrating"):  # the calibrator opens its own sessions
                check_loads(model, session_settings(), label="the model")
            calibrator = create_calibrator(
                source, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                calibrate_method=methods[method], extra_options=options,
            )  # fmt: skip
            with contextlib.redirect_stdout(io.StringIO()):  # the histogram code prints
                # one batch per call: onnxruntime's histogram collector stacks the outputs
                # of one call, which fails on a shorter last batch; it merges across calls
                for start in range(0, n, batch_size):
                    batch = feeds.batch(start, min(start + batch_size, n))
                    calibrator.collect_data(_Reader([batch]))
                data = calibrator.compute_data()
        except NativeCrash:
            raise
        except Exception as exc:  # onnxruntime raises many kinds here
            raise RewriteError(
                f"calibration failed in onnxruntime: {first_line(exc)}"
            ) from None
    return {name: _range(td) for name, td in data.items()}


def _range(tensor_data) -> Range:
    low, high = tensor_data.range_value
    return Range(float(np.min(low)), float(np.max(high)))
