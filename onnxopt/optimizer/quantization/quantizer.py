"""The quantization entry point: one float base model, many quantized candidates.

A :class:`Quantizer` is bound to a pristine float model and its calibration samples. It
calibrates once (per method), converts the base to onnx_ir once (per opset), and then builds
any number of quantized candidates from configs on clones of it: what a search trial calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import onnx
import onnx_ir as ir

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.shaping import adapt_inputs, onnx_input_shape
from onnxopt.errors import ConfigError
from onnxopt.graph import run_pass
from onnxopt.optimizer.quantization.annotate import Annotation, annotate, needs_calibration
from onnxopt.optimizer.quantization.calibration import Range, calibrate
from onnxopt.optimizer.quantization.labels import agree_with
from onnxopt.optimizer.quantization.qdq_pass import (
    DEFAULT_OPSET,
    QDQPass,
    QuantizationPassResult,
    QuantizationResult,
    coerce_storage,
    finish,
    raise_opset,
    required_opset,
)
from onnxopt.runtime.kernels import KernelFacts, kernel_facts


@dataclass(frozen=True)
class QuantizedCandidate:
    """A quantized model, what was decided, and (when asked for) the kernels that run it.

    Attributes:
        result: The pass's model and report.
        annotation: The specs the config resolved to, and the nodes it disabled.
        kernels: What onnxruntime runs the model as (None unless ``kernels=True``).
    """

    result: QuantizationResult
    annotation: Annotation
    kernels: KernelFacts | None = None

    @property
    def model(self) -> onnx.ModelProto:
        return self.result.model

    @property
    def float_nodes(self) -> dict[str, str]:
        """Every node left in float, with the reason."""
        return dict(self.result.float_nodes)

    def as_dict(self) -> dict:
        """Plain JSON: the pass report, the disabled nodes and, when known, the kernels."""
        data = {**self.result.as_dict(), "disabled": list(self.annotation.disabled)}
        if self.kernels is not None:
            data["expected_kernels"] = dict(self.kernels.nodes)
            data["fused_kernels"] = dict(self.kernels.counts)
        return data


class Quantizer:
    """Builds quantized candidates from one float base model.

    Args:
        model: the float base model (kept as given; candidates are built on clones).
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
        self._bases: dict[int, tuple[ir.Model, list[str]]] = {}

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

    @property
    def _graph(self) -> ir.Graph:
        """The base graph the annotator reads (never edited: candidates edit clones)."""
        return self._base(DEFAULT_OPSET)[0].graph

    def ranges(self, config: QuantizationConfig) -> dict[str, Range]:
        """Calibrated ranges for the config's method (computed once, then cached)."""
        if not needs_calibration(self._graph, config):
            return {}
        if self._x is None:
            raise ConfigError(
                "'auto' activation fractions need calibration data; pass --data "
                'or give data_in_frac_width as a number or "NA"'
            )
        c = config.calibration
        return self._ranges(c.method, c.percentile, c.num_samples)

    def _base(self, opset: int) -> tuple[ir.Model, list[str]]:
        """The base model at ``opset`` or newer, as onnx_ir (converted once per opset)."""
        if opset not in self._bases:
            raised, notes = raise_opset(self.model, opset)
            self._bases[opset] = (ir.from_proto(raised), notes)
        return self._bases[opset]

    def quantize(self, config: QuantizationConfig, *, kernels: bool = False) -> QuantizedCandidate:
        """A quantized copy of the base model for ``config``.

        Args:
            config: The quantization config.
            kernels: Also read what onnxruntime runs the model as (an onnxruntime session:
                a few milliseconds), and make the labels agree with it.
        """
        annotation = annotate(self._graph, config, self.ranges(config))
        storage = coerce_storage(config.storage)
        base, notes = self._base(max(DEFAULT_OPSET, required_opset(annotation.specs, storage)))
        result = run_pass(QDQPass(annotation.specs, storage, config.target_cpu), base.clone())
        assert isinstance(result, QuantizationPassResult)
        quantized = finish(
            result, notes, disabled=frozenset(annotation.disabled),
            by_name=frozenset(config.by_name),
        )  # fmt: skip
        candidate = QuantizedCandidate(quantized, annotation)
        return with_kernels(candidate) if kernels else candidate


def with_kernels(candidate: QuantizedCandidate) -> QuantizedCandidate:
    """The candidate with the kernels onnxruntime runs it as, and labels agreeing with them.

    Raises:
        ModelLoadError, EvaluationError: When onnxruntime cannot load the model.
    """
    result = candidate.result
    facts = kernel_facts(result.model, result.quantized)
    op_types = {n.name: n.op_type for n in result.model.graph.node}
    labels = agree_with(result.labels, facts.nodes, op_types)
    return replace(candidate, result=replace(result, labels=labels), kernels=facts)
