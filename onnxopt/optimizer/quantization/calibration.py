"""Activation ranges from calibration data, observed by onnxruntime's calibrators.

``minmax`` keeps the observed extremes. ``percentile`` (onnxruntime's
``PercentileCalibrater``, a 2048-bin histogram per tensor, ``symmetric=False``) keeps the
central ``p`` % of the values, cutting ``(100 - p) / 2`` % from each tail, trading rare
saturation for finer steps; a non-negative (ReLU) tensor has no lower tail to cut, so only
``(100 - p) / 2`` % of its values lie above the range. ``percentile = 100`` means minmax
(onnxruntime's histogram would return the left edge of the top bin, below the maximum).
Ranges are computed once per base model and reused for every candidate built from it.

Memory: onnxruntime's calibrators add a ReduceMin/ReduceMax pair per tensor at the end of
the graph, and its default execution order then runs those reductions last, keeping every
activation of a batch alive at once (347 MiB above the loaded process for an 8.8 MB
encoder at batch 64). :class:`_LeanSession` gives them a session with the priority-based
order, which runs each reduction as soon as its tensor exists, on the threads the caller
sets, without prepacked weight copies; the model goes to the calibrater with its weights in
a side file, and it writes the augmented model the same way (dropping the weights from its
proto). With :data:`BATCH_SIZE` samples per run: 40 MiB. ``percentile`` must output whole
tensors to histogram them, so its peak holds one batch's activations.
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
import onnx_ir as ir

from onnxopt.errors import RewriteError, first_line
from onnxopt.runtime.contained import NativeCrash, check_loads, stage
from onnxopt.runtime.io import Feeds, graph_inputs
from onnxopt.runtime.ort import session_options, session_settings


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


BATCH_SIZE = 16
"""Samples per calibration run: the activations of one run are held at once (48 MiB at 64
samples, 40 at 16 for the 8.8 MB encoder), and smaller runs cost little more time."""


class _LeanSession:
    """Mixed into an onnxruntime calibrater: its inference session runs the reductions as
    soon as their tensors exist (``ExecutionOrder.PRIORITY_BASED``), with no graph
    optimization (as onnxruntime's own), on ``threads`` intra-op threads."""

    threads = 1
    augmented_model_path: str
    execution_providers: list[str]
    infer_session: object

    def create_inference_session(self) -> None:
        import onnxruntime as ort

        options = session_options(self.threads, optimization="disable")
        options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
        options.add_session_config_entry("session.disable_prepacking", "1")
        self.infer_session = ort.InferenceSession(
            self.augmented_model_path, options, providers=self.execution_providers
        )


def _calibrater(source: Path, augmented: Path, method: str, percentile: float, threads: int):
    """onnxruntime's calibrater for ``method`` on the lean session, as ``create_calibrator``
    builds it (the graph augmented, the session made)."""
    from onnxruntime.quantization.calibrate import MinMaxCalibrater, PercentileCalibrater

    if method == "percentile":
        base, options = PercentileCalibrater, {"percentile": percentile, "symmetric": False}
    else:
        base, options = MinMaxCalibrater, {}
    lean = type(f"Lean{base.__name__}", (_LeanSession, base), {"threads": threads})
    calibrater = lean(
        source, None, augmented_model_path=str(augmented), use_external_data_format=True,
        **options,
    )  # fmt: skip
    calibrater.augment_graph()
    calibrater.create_inference_session()
    return calibrater


def calibrate(
    model: onnx.ModelProto,
    x: Feeds | np.ndarray,
    n: int | None = None,
    *,
    method: str = "minmax",
    percentile: float = 99.999,
    batch_size: int = BATCH_SIZE,
    threads: int = 1,
) -> dict[str, Range]:
    """Observe the range of every activation tensor of ``model`` on samples ``x``.

    Args:
        model: a float model; it is not modified.
        x: feeds for every input, or one array shaped for the model's single input.
        n: how many samples to use (all by default).
        method: ``minmax`` or ``percentile``.
        percentile: the percentile kept by ``percentile`` calibration.
        batch_size: samples per onnxruntime run.
        threads: intra-op threads of the calibration session.

    Returns:
        Tensor name -> observed range, for every tensor the calibrator saw.
    """
    if method == "percentile" and percentile >= 100.0:
        method = "minmax"
    feeds = x if isinstance(x, Feeds) else Feeds(graph_inputs(model), x)
    n = len(feeds) if n is None else min(n, len(feeds))
    with tempfile.TemporaryDirectory(prefix="onnxopt-calib-") as tmp:
        source = Path(tmp) / "model.onnx"
        # weights in a side file: no serialized copy of them in memory, only of the graph
        # (onnx_ir, as onnx.save_model would move the caller's weights out of its proto)
        ir.save(ir.from_proto(model), source, external_data="model.data")
        try:
            with stage("calibrating"):  # the calibrator opens its own sessions
                check_loads(model, session_settings(), label="the model")
            augmented = Path(tmp) / "augmented.onnx"
            calibrator = _calibrater(source, augmented, method, percentile, threads)
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
