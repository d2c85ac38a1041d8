"""Build a trial's candidate from the pristine base: scale widths, then quantize.

One :class:`WidthScaler` is kept for the whole search and one :class:`Quantizer` per width
choice (it calibrates the scaled model once), so a trial never re-calibrates, re-reads a
file or touches the base model. Workers of one search on one machine also share the scaled
models and their calibrated ranges through a folder (:meth:`CandidateBuilder.share`): a
width choice one worker refitted and calibrated is read, not redone, by the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from google.protobuf.message import DecodeError

from onnxopt.atomic import write_text
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.dataset import Dataset
from onnxopt.model_io import save_onnx
from onnxopt.optimizer.quantization.calibration import Range
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.optimizer.search.space import Choice, SearchSpace
from onnxopt.optimizer.width import WidthConfig, WidthScaler, refit_inputs

MAX_CACHED_QUANTIZERS = 64


@dataclass(frozen=True)
class Candidate:
    """A built candidate and the config that made it (plain JSON in :meth:`config_dict`)."""

    model: onnx.ModelProto
    quantization: QuantizationConfig | None
    width: dict[str, float]
    quantized: tuple[str, ...] = ()
    """The nodes the quantizer rewrote (the deployment card reads their kernels)."""

    def config_dict(self) -> dict:
        """The candidate's config as plain JSON."""
        quant = None if self.quantization is None else self.quantization.model_dump(mode="json")
        return {"quantization": quant, "width_multipliers": dict(self.width)}


class CandidateBuilder:
    """Turns points of a search space into models, caching what trials share.

    Args:
        base: The pristine float base model.
        dataset: Its dataset (training data feeds width refits and calibration).
        width: The search's width config (None: no width scaling).
        fixed_inputs: Values for model inputs the data do not give.
    """

    def __init__(
        self,
        base: onnx.ModelProto,
        dataset: Dataset,
        width: WidthConfig | None,
        fixed_inputs: Mapping[str, Any] | None = None,
    ) -> None:
        self.base = base
        self._calibration_x = dataset.calibration.x
        self._fixed = dict(fixed_inputs or {})
        self.width_config = width
        self.scaler = None
        if width is not None:
            calib = refit_inputs(dataset) if width.needs_calibration() else None
            self.scaler = WidthScaler(base, calib, self._fixed)
        self._quantizers: OrderedDict[tuple, Quantizer] = OrderedDict()
        self._shared: Path | None = None

    def share(self, folder: Path, identity: str) -> None:
        """Read and write the scaled models and calibrated ranges of width choices in
        ``folder`` (the workers of one search), under ``identity`` (what decides them: the
        base model, the data and the width config; another identity shares nothing)."""
        width = "" if self.width_config is None else self.width_config.model_dump_json()
        digest = hashlib.sha256(f"{identity}:{width}".encode()).hexdigest()[:16]
        self._shared = Path(folder) / f"width-{digest}"  # made by the first write

    def _shared_path(self, choice: Choice, suffix: str) -> Path | None:
        if self._shared is None:
            return None
        key = hashlib.sha256(repr(choice.width_key()).encode()).hexdigest()[:24]
        return self._shared / f"{key}{suffix}"

    def width_space(self) -> dict[str, tuple[float, ...]]:
        """Width choices per channel group (empty without width scaling)."""
        if self.scaler is None or self.width_config is None:
            return {}
        return self.scaler.search_space(self.width_config)

    def scaled(self, choice: Choice) -> onnx.ModelProto:
        """The base model scaled to the point's widths (the base itself when unscaled)."""
        if self.scaler is None or all(m == 1.0 for m in choice.width.values()):
            return self.base
        path = self._shared_path(choice, ".onnx")
        if path is not None and path.is_file():  # another worker's refit of this choice
            with contextlib.suppress(OSError, DecodeError):  # unreadable: refit again
                return onnx.load_model(str(path))
        model = self.scaler.scale_groups(choice.width, self.width_config).model
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_onnx(model, path)
        return model

    def quantizer(self, choice: Choice) -> Quantizer:
        """The Quantizer of the point's width choice (built and calibrated once)."""
        key = choice.width_key()
        if key not in self._quantizers:
            self._quantizers[key] = Quantizer(
                self.scaled(choice), self._calibration_x, self._fixed,
                ranges_cache=_RangesFile(self._shared_path(choice, ".ranges.json")),
            )  # fmt: skip
            if len(self._quantizers) > MAX_CACHED_QUANTIZERS:
                self._quantizers.popitem(last=False)
        self._quantizers.move_to_end(key)
        return self._quantizers[key]

    def build(self, space: SearchSpace, choice: Choice) -> Candidate:
        """The candidate model of one point.

        Raises:
            RewriteError, ConfigError: When the point cannot be built.
        """
        config = space.quantization(choice)
        if config is None:
            return Candidate(self.scaled(choice), None, dict(choice.width))
        quantized = self.quantizer(choice).quantize(config)
        return Candidate(quantized.model, config, dict(choice.width), quantized.result.quantized)


class _RangesFile:
    """Calibrated ranges of one width choice in the shared folder (nothing without one).

    A cache: a file that cannot be read counts as empty (the ranges are computed again),
    and it is written whole (a temporary file, then a rename)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _read(self) -> dict:
        if self.path is None:
            return {}
        try:
            stored = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return stored if isinstance(stored, dict) else {}

    def get(self, key: str) -> dict[str, Range] | None:
        stored = self._read().get(key)
        return None if stored is None else {n: Range(*r) for n, r in stored.items()}

    def put(self, key: str, ranges: dict[str, Range]) -> None:
        if self.path is None:
            return
        stored = self._read()
        stored[key] = {n: [r.low, r.high] for n, r in ranges.items()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(stored))


def model_hash(data: bytes) -> str:
    """SHA-256 of serialized model bytes (stored per trial)."""
    import hashlib

    return hashlib.sha256(data).hexdigest()
