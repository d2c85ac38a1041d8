"""Quantize a model file: what ``onnxopt quantize`` does, as one library call.

The user's model is prepared (:func:`~onnxopt.exporters.user_model.load_user_model`),
quantized, and loaded by onnxruntime, which also tells the kernels it runs, *before* any
file is written: a model onnxruntime cannot run (no QDQ kernels at opset 28) leaves nothing
behind. The same config in the other weight storage is built too, to report both sizes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.dataset import Features
from onnxopt.exporters.user_model import DEFAULTS, Preparation, load_user_model
from onnxopt.model_io import save_onnx
from onnxopt.optimizer.evaluate.size import parameter_stats, size_on_disk
from onnxopt.optimizer.quantization.qdq_pass import DEFAULT_OPSET
from onnxopt.optimizer.quantization.quantizer import QuantizedCandidate, Quantizer
from onnxopt.runtime.cpu import integer_path


@dataclass(frozen=True)
class QuantizedFile:
    """A quantized model written to disk and everything its report shows.

    Attributes:
        candidate: The model, its report and the kernels onnxruntime runs it as.
        output: The file written.
        sizes: Bytes: ``original`` (the input file), the config's storage (the output
            file) and the other storage (serialized, not written).
        notes: What preparing the user's model changed (one line each).
    """

    candidate: QuantizedCandidate
    output: Path
    sizes: dict[str, int]
    notes: tuple[str, ...]

    def report(self) -> dict[str, Any]:
        """The plain-JSON report (``onnxopt quantize --json``)."""
        return {
            **self.candidate.as_dict(),
            "size_bytes": dict(self.sizes),
            "theoretical_size_bytes": parameter_stats(self.candidate.model).theoretical_size_bytes,
            "integer_path": integer_path().as_dict(),
        }


def quantize_file(
    model: Path,
    output: Path,
    config: QuantizationConfig,
    calibration_x: Features | None,
    fixed_inputs: Mapping[str, Any] | None = None,
    *,
    preparation: Preparation = DEFAULTS,
) -> QuantizedFile:
    """Quantize the ONNX file ``model`` with ``config`` into ``output``.

    Raises:
        ModelLoadError, ConfigError, RewriteError, EvaluationError: One line each; nothing
            is written then.
    """
    prepared = load_user_model(model, dataclasses.replace(preparation, opset=DEFAULT_OPSET))
    quantizer = Quantizer(prepared.model, calibration_x, fixed_inputs)
    candidate = quantizer.quantize(config, kernels=True)
    other = "packed" if config.storage == "container" else "container"
    alternative = quantizer.quantize(config.model_copy(update={"storage": other}))
    save_onnx(candidate.model, output)
    sizes = {
        "original": size_on_disk(model),
        config.storage: size_on_disk(output),
        other: alternative.model.ByteSize(),
    }
    return QuantizedFile(candidate, Path(output), sizes, prepared.notes)
