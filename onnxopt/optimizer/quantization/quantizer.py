"""The quantization entry point: one float base model, many quantized candidates.

A :class:`Quantizer` is bound to a pristine float model and its calibration samples. It
calibrates once (per method) and then builds any number of quantized candidates from
configs, never touching the base model: what a search trial calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import onnx

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.shaping import adapt_inputs, onnx_input_shape
from onnxopt.errors import ConfigError
from onnxopt.optimizer.quantization.annotate import Annotation, annotate, needs_calibration
from onnxopt.optimizer.quantization.calibration import Range, calibrate
from onnxopt.optimizer.quantization.qdq_pass import QuantizationResult, quantize_model


@dataclass(frozen=True)
class QuantizedCandidate:
    """A quantized model with what was decided and what stayed in float."""

    result: QuantizationResult
    annotation: Annotation
    float_nodes: dict[str, str]

    @property
    def model(self) -> onnx.ModelProto:
        return self.result.model

    def as_dict(self) -> dict:
        """Plain JSON: the pass report plus the nodes left in float and why."""
        return {**self.result.as_dict(), "disabled": list(self.annotation.disabled),
                "float_nodes": dict(self.float_nodes)}  # fmt: skip


def float_nodes(model: onnx.ModelProto, skipped: dict[str, str], disabled: list[str]) -> dict:
    """Nodes still computing with float parameters, each with the reason it stayed float."""
    floats = {t.name for t in model.graph.initializer if t.data_type in _FLOAT_TYPES}
    out = {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Clip"):
            continue
        if node.op_type in _CONTROL_FLOW and node.domain in ("", "ai.onnx"):
            # its subgraphs may compute with weights the pass never sees: say so
            out[node.name or node.output[0]] = (
                f"{node.op_type} (control flow): onnxopt does not rewrite inside its subgraphs"
            )
        elif any(name in floats for name in node.input):
            out[node.name] = skipped.get(node.name) or (
                "disabled by the config" if node.name in disabled
                else f"{node.op_type} is not quantized by onnxopt (only Gemm, MatMul, Conv)"
            )  # fmt: skip
    return out


_CONTROL_FLOW = ("If", "Loop", "Scan")
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16)  # fmt: skip


class Quantizer:
    """Builds quantized candidates from one float base model.

    Args:
        model: the float base model (kept as given; candidates are built on copies).
        calibration_x: calibration features (flat or already shaped); needed when any
            activation fraction is ``"auto"``.
    """

    def __init__(self, model: onnx.ModelProto, calibration_x: np.ndarray | None = None) -> None:
        self.model = model
        self._x = None
        if calibration_x is not None:
            self._x = adapt_inputs(
                calibration_x, onnx_input_shape(model), input_name=model.graph.input[0].name
            )
        self._ranges = cache(self._calibrate)

    def _calibrate(self, method: str, percentile: float, num_samples: int) -> dict[str, Range]:
        assert self._x is not None
        x, batch = self._x[:num_samples], (onnx_input_shape(self.model) or [None])[0]
        if isinstance(batch, int) and batch > 0:
            # a model exported with a fixed batch size (often 1) runs only that size
            x = x[: len(x) - len(x) % batch]
            if not len(x):
                raise ConfigError(
                    f"the model's batch size is fixed to {batch}; calibrate on at least "
                    f"{batch} samples (calibration.num_samples)"
                )
            return calibrate(self.model, x, method=method, percentile=percentile, batch_size=batch)
        return calibrate(self.model, x, method=method, percentile=percentile)

    def ranges(self, config: QuantizationConfig) -> dict[str, Range]:
        """Calibrated ranges for the config's method (computed once, then cached)."""
        if not needs_calibration(self.model, config):
            return {}
        if self._x is None:
            raise ConfigError(
                "'auto' activation fractions need calibration data; pass --data "
                'or give data_in_frac_width as a number or "NA"'
            )
        c = config.calibration
        return self._ranges(c.method, c.percentile, c.num_samples)

    def quantize(self, config: QuantizationConfig) -> QuantizedCandidate:
        """A quantized copy of the base model for ``config``."""
        annotation = annotate(self.model, config, self.ranges(config))
        result = quantize_model(self.model, annotation.specs, storage=config.storage)
        return QuantizedCandidate(
            result, annotation, float_nodes(result.model, dict(result.skipped),
                                            annotation.disabled),
        )  # fmt: skip
