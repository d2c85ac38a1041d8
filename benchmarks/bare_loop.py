"""The bare loop: the least a script needs to search the same space with Optuna + onnxruntime.

What a user would write instead of onnxopt, doing the same work per trial:

* sample the point with the same Optuna sampler (onnxopt's registry builds it, so sizes and
  seeds match) on Optuna's default in-memory storage (``--bare-storage journal``: Optuna's
  own journal file, fsync'ed per write as Optuna does it);
* scale the widths with onnxopt's :class:`~onnxopt.optimizer.width.WidthScaler` (there is
  no onnxruntime tool for it; the joint space only), calibrate the scaled model with
  ``onnxruntime.quantization``'s MinMax calibrator once per width choice, and build the QDQ
  model with its ``QDQQuantizer`` (weights int8 or int4, activations uint8 or uint4; bias
  int32, as onnxruntime does it);
* open an onnxruntime session (one intra-op thread), score accuracy on the whole validation
  split in one run, time ``repeats`` runs after ``warmup`` at the latency batch size and take
  the median.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import optuna
from onnxruntime.quantization import CalibrationDataReader, QuantType
from onnxruntime.quantization.calibrate import create_calibrator
from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

from onnxopt.samplers import SpaceShape, make_sampler

LINEAR = ["Gemm", "MatMul"]


@dataclass(frozen=True)
class Protocol:
    """The latency protocol both loops use."""

    batch_size: int
    warmup: int
    repeats: int
    threads: int = 1


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, x: np.ndarray) -> None:
        self._items = iter([{name: x}])

    def get_next(self):
        return next(self._items, None)


def weight_type(width: int) -> QuantType:
    return QuantType.QInt8 if width > 4 else QuantType.QInt4


def activation_type(width: int) -> QuantType:
    return QuantType.QUInt8 if width > 4 else QuantType.QUInt4


class BareLoop:
    """One search of the bare loop.

    Args:
        base: The float model.
        dims: Parameter name -> choices (``w.<group>`` width multipliers, ``data_in``,
            ``weight``, ``bias`` widths).
        calibration_x: Calibration features (training data).
        val_x, val_y: The validation split.
        protocol: Latency protocol.
        scaler, width_config: onnxopt's width scaler and config (joint space only).
    """

    def __init__(
        self,
        base: onnx.ModelProto,
        dims: Mapping[str, Sequence],
        calibration_x: np.ndarray,
        val_x: np.ndarray,
        val_y: np.ndarray,
        protocol: Protocol,
        scaler=None,
        width_config=None,
    ) -> None:
        self.base = base
        self.dims = {k: list(v) for k, v in dims.items()}
        self.calibration_x = np.asarray(calibration_x, np.float32)
        self.val_x = np.asarray(val_x, np.float32)
        self.val_y = np.asarray(val_y)
        self.protocol = protocol
        self.scaler = scaler
        self.width_config = width_config
        self.input_name = base.graph.input[0].name
        self._calibrated: dict[tuple, tuple[onnx.ModelProto, object]] = {}
        self._tmp = tempfile.TemporaryDirectory()

    def run(self, sampler: str, n_trials: int, storage=None) -> optuna.Study:
        """A fresh study of ``n_trials`` trials (accuracy up, latency down)."""
        shape = SpaceShape(self.dims, n_trials)
        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=make_sampler(sampler, 0, shape),
            storage=storage,
        )  # fmt: skip
        study.optimize(self.objective, n_trials=n_trials)
        return study

    def objective(self, trial: optuna.Trial) -> tuple[float, float]:
        p = {name: trial.suggest_categorical(name, choices) for name, choices in self.dims.items()}
        widths = {k[2:]: float(v) for k, v in p.items() if k.startswith("w.")}
        model, ranges = self._float_and_ranges(widths)
        quantizer = QDQQuantizer(
            _copy(model), False, False, weight_type(p["weight"]), activation_type(p["data_in"]),
            ranges, None, [], LINEAR, {"ActivationSymmetric": False},
        )  # fmt: skip
        quantized = quantizer.quantize_model()
        data = quantized.SerializeToString()
        trial.set_user_attr("size", len(data))
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.protocol.threads
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        scores = session.run(None, {self.input_name: self.val_x})[0]
        accuracy = float(np.mean(np.argmax(scores, axis=1) == self.val_y))
        return accuracy, self._latency(session)

    def _latency(self, session: ort.InferenceSession) -> float:
        proto = self.protocol
        x = np.resize(self.val_x, (proto.batch_size, *self.val_x.shape[1:]))
        feeds = {self.input_name: x}
        for _ in range(proto.warmup):
            session.run(None, feeds)
        times = []
        for _ in range(proto.repeats):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    def _float_and_ranges(self, widths: dict[str, float]):
        """The scaled float model (shape-inferred) and its calibrated ranges, once per width
        choice (a sensible script would not re-calibrate an unchanged model)."""
        key = tuple(sorted(widths.items()))
        if key not in self._calibrated:
            model = self.base
            if widths and self.scaler is not None:
                model = self.scaler.scale_groups(widths, self.width_config).model
            model = onnx.shape_inference.infer_shapes(model)
            path = Path(self._tmp.name) / "calibrate.onnx"
            onnx.save(model, path)
            calibrator = create_calibrator(
                path, LINEAR, augmented_model_path=Path(self._tmp.name) / "augmented.onnx"
            )
            calibrator.collect_data(_Reader(self.input_name, self.calibration_x))
            self._calibrated[key] = (model, calibrator.compute_data())
        return self._calibrated[key]


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
