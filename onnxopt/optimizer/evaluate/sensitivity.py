"""Per-layer sensitivity: how much a metric drops when only one layer is quantized.

For every quantizable layer (Gemm, MatMul, Conv) and every weight width, the model is
quantized with that layer alone enabled (its weights at the width, its inputs at
``data_in_width`` bits, every other layer float) by the same :class:`~onnxopt.optimizer.
quantization.quantizer.Quantizer` the search uses, and scored by the same
:class:`~onnxopt.optimizer.evaluate.measure.Measurer`. Layers are ranked by their worst drop:
the first ones are those a search should keep wide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from onnxopt.config.quantization import OP_TYPES, LayerQuant, QuantizationConfig
from onnxopt.errors import UsageError
from onnxopt.optimizer.evaluate.measure import Measurer
from onnxopt.optimizer.quantization.quantizer import Quantizer

QUANTIZABLE = frozenset(t for types in OP_TYPES.values() for t in types)


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer: its metric, and drop from the fp32 model, at each weight width."""

    node: str
    op_type: str
    parameters: int
    metric: dict[int, float]
    drop: dict[int, float]

    @property
    def worst(self) -> float:
        return max(self.drop.values())

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op_type": self.op_type, "parameters": self.parameters,
                "metric": {str(k): v for k, v in self.metric.items()},
                "drop": {str(k): v for k, v in self.drop.items()},
                "worst_drop": self.worst}  # fmt: skip


@dataclass(frozen=True)
class SensitivityReport:
    """Every layer, most sensitive first."""

    metric: str
    baseline: float
    widths: tuple[int, ...]
    data_in_width: int
    samples: int
    layers: list[LayerSensitivity] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "baseline": self.baseline, "widths": list(self.widths),
                "data_in_width": self.data_in_width, "samples": self.samples,
                "layers": [layer.as_dict() for layer in self.layers]}  # fmt: skip


def _parameters(model: onnx.ModelProto, node: onnx.NodeProto) -> int:
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer}
    return sum(sizes.get(name, 0) for name in node.input[1:])


def quantizable_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes the quantizer can quantize, in graph order."""
    return [n for n in model.graph.node if n.op_type in QUANTIZABLE]


def layer_sensitivity(
    model: onnx.ModelProto,
    measurer: Measurer,
    calibration_x: Any,
    *,
    metric: str,
    direction: str,
    widths: Sequence[int] = (2, 4, 8),
    data_in_width: int = 8,
    fixed_inputs: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> SensitivityReport:
    """Quantize each layer alone at each weight width and score it.

    Args:
        model: The float model (every node named).
        measurer: Scores models on the chosen split.
        calibration_x: Calibration features (activation fractions are ``"auto"``).
        metric: The ``outputs``-tier metric to compare.
        direction: The metric's direction (a drop is a fall when maximized).
        widths: Weight widths to try.
        data_in_width: Width of the layer's inputs.
        fixed_inputs: Values for inputs the data do not give.
        progress: Receives one line per layer.

    Raises:
        UsageError: When the model has no quantizable layer or the metric is not measured.
    """
    layers = quantizable_layers(model)
    if not layers:
        raise UsageError("the model has no Gemm, MatMul or Conv layer to quantize")
    quantizer = Quantizer(model, calibration_x, fixed_inputs)
    baseline = _score(measurer, model, metric)
    sign = 1.0 if direction == "maximize" else -1.0
    out = []
    for i, node in enumerate(layers, start=1):
        progress(f"layer {i}/{len(layers)}: {node.name} ({node.op_type})")
        scores = {}
        for width in widths:
            # enabled set explicitly: an overlay replaces only the keys it sets
            only = LayerQuant(enabled=True, weight_width=width, data_in_width=data_in_width)
            config = QuantizationConfig(default=LayerQuant(enabled=False),
                                        by_name={node.name: only})  # fmt: skip
            candidate = quantizer.quantize(config)
            if node.name not in candidate.result.quantized:
                reason = candidate.float_nodes.get(node.name, "not quantized")
                raise UsageError(f"layer {node.name!r} cannot be quantized alone: {reason}")
            scores[width] = _score(measurer, candidate.model, metric)
        drops = {w: sign * (baseline - v) for w, v in scores.items()}
        out.append(LayerSensitivity(node.name, node.op_type, _parameters(model, node), scores,
                                    drops))  # fmt: skip
    out.sort(key=lambda s: (-s.worst, s.node))
    return SensitivityReport(metric, baseline, tuple(widths), data_in_width,
                             len(measurer.split), out)  # fmt: skip


def _score(measurer: Measurer, model: onnx.ModelProto, metric: str) -> float:
    metrics, _ = measurer.output_metrics(measurer.load(model))
    if metric not in metrics:
        raise UsageError(f"metric {metric!r} is not measured here; use one of "
                         f"{', '.join(sorted(metrics))}")  # fmt: skip
    return metrics[metric]


def sensitivity_table(report: SensitivityReport) -> str:
    """The ranked table: one row per layer, the drop at each width."""
    head = ["rank", "node", "op", "params", *(f"drop @{w}b" for w in report.widths)]
    rows = [[str(i), s.node, s.op_type, f"{s.parameters:,}",
             *(f"{s.drop[w]:+.4f}" for w in report.widths)]
            for i, s in enumerate(report.layers, start=1)]  # fmt: skip
    widths = [max(len(c), *(len(r[j]) for r in rows)) for j, c in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    title = (f"{report.metric} of the fp32 model {report.baseline:.4f} on {report.samples} "
             f"samples; each layer alone quantized (inputs {report.data_in_width}-bit)")
    return "\n".join([title, line(head), *(line(r) for r in rows)])
