"""The quantization entry point: one float base model, many quantized candidates.

A :class:`Quantizer` is bound to a pristine float model and its calibration samples. It
calibrates once (per method) and then builds any number of quantized candidates from
configs, never touching the base model: what a search trial calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import onnx

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.shaping import adapt_inputs, onnx_input_shape
from onnxopt.errors import ConfigError
from onnxopt.optimizer.quantization.annotate import Annotation, annotate, needs_calibration
from onnxopt.optimizer.quantization.calibration import Range, calibrate
from onnxopt.optimizer.quantization.labels import agree_with, graph_kernels
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

    def with_kernels(self, kernels: Mapping[str, str | None]) -> QuantizedCandidate:
        """This candidate with labels and expected kernels made to agree with ``kernels``
        (node -> the integer kernel onnxruntime really runs it as, None: float), read from
        the optimized graph (:func:`onnxopt.optimizer.evaluate.optimized_graph`)."""
        return replace(self, result=_agreeing(self.result, kernels))


def _agreeing(result: QuantizationResult, kernels: Mapping[str, str | None]) -> QuantizationResult:
    op_types = {n.name: n.op_type for n in result.model.graph.node}
    labels, expected = agree_with(result.labels, result.expected_kernels, kernels, op_types)
    return replace(result, labels=labels, expected_kernels=expected)


def _skipped_reason(node: onnx.NodeProto, reason: str, by_name: frozenset[str]) -> str:
    text = reason if f"'{node.op_type}'" in reason else f"{node.op_type} not quantized: {reason}"
    if node.name in by_name:
        text += f'; its [by_name."{node.name}"] settings have no effect'
    return text


def float_nodes(
    model: onnx.ModelProto,
    skipped: Mapping[str, str],
    disabled: list[str],
    by_name: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Every node left in float with the reason, the reason starting with its op type.

    These are the nodes the pass skipped (unsupported op type or form), the nodes the config
    disabled, other nodes computing with float parameters, and control-flow nodes.
    """
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
        elif node.name in skipped:
            out[node.name] = _skipped_reason(node, skipped[node.name], by_name)
        elif node.name in disabled:
            out[node.name] = f"{node.op_type} disabled by the config (enabled = false)"
        elif any(name in floats for name in node.input):
            out[node.name] = f"{node.op_type} is not quantized by onnxopt (only Gemm, MatMul, Conv)"
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
        result = quantize_model(
            self.model, annotation.specs, storage=config.storage, target_cpu=config.target_cpu
        )
        # the pass judges fusion from each node's own data_out; the finished graph also
        # shows the next layer's input Q that onnxruntime moves up to it
        result = _agreeing(
            result, graph_kernels(result.model, result.labels, result.expected_kernels)
        )
        floats = float_nodes(
            result.model, result.skipped, annotation.disabled, frozenset(config.by_name)
        )
        return QuantizedCandidate(result, annotation, floats)
