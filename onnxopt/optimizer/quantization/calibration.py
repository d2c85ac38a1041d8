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
encoder at batch 64); they also load the weights into a Python proto of their own. So
``minmax`` is collected here the way onnxruntime's ``MinMaxCalibrater`` does it (the same
tensors: float inputs and outputs of every top-level node but initializers, after shape
inference; a ReduceMin/ReduceMax pair with ``keepdims=1`` on each; the extremes merged over
batches), on an augmented graph that points at the weights in a side file instead of
holding them, in a session with the priority-based execution order (each reduction runs as
soon as its tensor exists), no prepacked weight copies and the caller's thread count.
``percentile`` is onnxruntime's ``PercentileCalibrater`` on the same kind of session
(:class:`_LeanSession`); it must output whole tensors to histogram them, so its peak holds
one batch's activations.
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
"""Samples per calibration run: what one run holds at once grows with it (the 8.8 MB
encoder's min/max calibration peaks 13 MiB higher at 64 samples), and smaller runs cost
little more time."""


_CALIBRATED = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
"""Tensor types whose ranges are observed (onnxruntime's calibrators observe these too)."""


def _lean_session(path: Path, threads: int, providers: list[str] | None = None):
    """A session that runs reductions as soon as their tensors exist, unoptimized, without
    prepacked weight copies, on ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = session_options(threads, optimization="disable")
    options.execution_order = ort.ExecutionOrder.PRIORITY_BASED
    options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def _observed_tensors(graph: onnx.GraphProto) -> list[tuple[str, int]]:
    """(name, element type) of every float input and output of the graph's nodes but its
    initializers, in graph order (what onnxruntime's calibrators select)."""
    types = {v.name: v.type for v in (*graph.value_info, *graph.output, *graph.input)}
    constants = {t.name for t in graph.initializer}
    chosen: dict[str, int] = {}
    for node in graph.node:
        for name in (*node.input, *node.output):
            kind = types.get(name)
            if not name or name in constants or name in chosen or kind is None:
                continue
            if kind.HasField("tensor_type") and kind.tensor_type.elem_type in _CALIBRATED:
                chosen[name] = kind.tensor_type.elem_type
    return list(chosen.items())


def _minmax(source: Path, folder: Path, feeds: Feeds, n: int, batch_size: int, threads: int):
    """Min and max of every observed tensor over ``n`` samples, streamed batch by batch."""
    inferred = folder / "inferred.onnx"
    onnx.shape_inference.infer_shapes_path(str(source), str(inferred))
    model = onnx.load(str(inferred), load_external_data=False)  # weights stay in the file
    tensors = _observed_tensors(model.graph)
    reductions: dict[str, list[onnx.NodeProto]] = {}
    outputs = []
    for i, (name, elem) in enumerate(tensors):
        for op in ("ReduceMin", "ReduceMax"):
            out = f"onnxopt_calib_{i}_{op}"
            reductions.setdefault(name, []).append(
                onnx.helper.make_node(op, [name], [out], keepdims=1)
            )
            model.graph.output.append(onnx.helper.make_tensor_value_info(out, elem, None))
            outputs.append(out)
    # each pair right after its tensor's producer: the priority-based order then runs it
    # before the tensor's consumers, and the tensor is freed as soon as they are done
    order = [r for i in model.graph.input for r in reductions.pop(i.name, [])]
    for node in model.graph.node:
        order += [node, *(r for o in node.output for r in reductions.pop(o, []))]
    order += [r for rest in reductions.values() for r in rest]
    del model.graph.node[:]
    model.graph.node.extend(order)
    augmented = folder / "augmented.onnx"
    onnx.save_model(model, str(augmented))
    session = _lean_session(augmented, threads)
    low = np.full(len(tensors), np.inf)
    high = np.full(len(tensors), -np.inf)
    for start in range(0, n, batch_size):
        values = session.run(outputs, feeds.batch(start, min(start + batch_size, n)))
        low = np.fmin(low, [float(np.min(v)) for v in values[0::2]])
        high = np.fmax(high, [float(np.max(v)) for v in values[1::2]])
    pairs = zip(tensors, low, high, strict=True)
    return {name: Range(float(lo), float(hi)) for (name, _), lo, hi in pairs}


class _LeanSession:
    """Mixed into an onnxruntime calibrater: its inference session runs the reductions as
    soon as their tensors exist (``ExecutionOrder.PRIORITY_BASED``), with no graph
    optimization (as onnxruntime's own), on ``threads`` intra-op threads."""

    threads = 1
    augmented_model_path: str
    execution_providers: list[str]
    infer_session: object

    def create_inference_session(self) -> None:
        path = Path(self.augmented_model_path)
        self.infer_session = _lean_session(path, self.threads, self.execution_providers)


def _percentile_calibrater(source: Path, augmented: Path, percentile: float, threads: int):
    """onnxruntime's PercentileCalibrater on the lean session, as ``create_calibrator``
    builds it (the graph augmented, the session made)."""
    from onnxruntime.quantization.calibrate import PercentileCalibrater

    lean = type("LeanPercentileCalibrater", (_LeanSession, PercentileCalibrater),
                {"threads": threads})  # fmt: skip
    calibrater = lean(
        source, None, augmented_model_path=str(augmented), use_external_data_format=True,
        percentile=percentile, symmetric=False,
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
            if method == "minmax":
                return _minmax(source, Path(tmp), feeds, n, batch_size, threads)
            augmented = Path(tmp) / "augmented.onnx"
            calibrator = _percentile_calibrater(source, augmented, percentile, threads)
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
