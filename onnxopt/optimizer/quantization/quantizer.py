"""The quantization entry point: one float base model, many quantized candidates.

A :class:`Quantizer` is bound to a pristine float model and its calibration samples. It
calibrates once (per method), converts the base to onnx_ir once (per opset), and then builds
any number of quantized candidates from configs on clones of it: what a search trial calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache
from typing import Any, Protocol

import onnx
import onnx_ir as ir

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.dataset import Features
from onnxopt.errors import ConfigError
from onnxopt.graph import run_pass
from onnxopt.optimizer.quantization.annotate import Annotation, annotate, needs_calibration
from onnxopt.optimizer.quantization.calibration import BATCH_SIZE as CALIBRATION_BATCH
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
from onnxopt.runtime.io import Feeds, graph_inputs
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


class RangesCache(Protocol):
    """Calibrated ranges kept outside one Quantizer (the workers of a search share them)."""

    def get(self, key: str) -> dict[str, Range] | None: ...

    def put(self, key: str, ranges: dict[str, Range]) -> None: ...


class Quantizer:
    """Builds quantized candidates from one float base model.

    Args:
        model: the float base model (kept as given; candidates are built on clones).
        calibration_x: calibration features (one array, or one per input name); needed
            when any activation fraction is ``"auto"``.
        fixed_inputs: values for inputs the calibration data do not give.
        ranges_cache: where calibrated ranges are kept between processes (``get(key)`` /
            ``put(key, ranges)``; None: in this process only).
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        calibration_x: Features | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
        *,
        ranges_cache: RangesCache | None = None,
    ) -> None:
        self.model = model
        self._ranges_cache = ranges_cache
        self._feeds = None
        if calibration_x is not None:
            self._feeds = Feeds(graph_inputs(model), calibration_x, fixed_inputs)
        self._ranges = cache(self._calibrate)
        self._bases: dict[int, tuple[ir.Model, list[str]]] = {}

    def _calibrate(self, method: str, percentile: float, num_samples: int) -> dict[str, Range]:
        key = f"{method}:{percentile!r}:{num_samples}"
        kept = self._ranges_cache.get(key) if self._ranges_cache is not None else None
        if kept is None:
            kept = self._observe(method, percentile, num_samples)
            if self._ranges_cache is not None:
                self._ranges_cache.put(key, kept)
        return kept

    def _observe(self, method: str, percentile: float, num_samples: int) -> dict[str, Range]:
        assert self._feeds is not None
        n, batch = min(num_samples, len(self._feeds)), _fixed_batch(self.model)
        if batch is not None:
            # a model exported with a fixed batch size (often 1) runs only that size
            n -= n % batch
            if not n:
                raise ConfigError(
                    f"the model's batch size is fixed to {batch}; calibrate on at least "
                    f"{batch} samples (calibration.num_samples)"
                )
        return calibrate(
            self.model, self._feeds, n, method=method, percentile=percentile,
            batch_size=batch or CALIBRATION_BATCH,
        )  # fmt: skip

    @property
    def _graph(self) -> ir.Graph:
        """The base graph the annotator reads (never edited: candidates edit clones)."""
        return self._base(DEFAULT_OPSET)[0].graph

    def ranges(self, config: QuantizationConfig) -> dict[str, Range]:
        """Calibrated ranges for the config's method (computed once, then cached)."""
        if not needs_calibration(self._graph, config):
            return {}
        if self._feeds is None:
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


def _fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size every input is fixed to, or None when it is dynamic."""
    sizes = {i.shape[0] for i in graph_inputs(model) if i.shape and isinstance(i.shape[0], int)}
    size = next(iter(sizes)) if len(sizes) == 1 else None
    return size if size and size > 0 else None
