"""Quantization config: the lab's names, by op type or by node name, the by-name entry winning.

TOML shape (``onnxopt quantize MODEL --config q.toml``)::

    target_cpu = "auto"             # exact on this CPU; or a class: "avx2", "avx512-vnni", "any"...
    storage = "container"           # or "packed": sub-byte weights as INT4/INT2 on disk
    granularity = "per_tensor"      # or "per_channel" (weights)
    [calibration]
    method = "minmax"               # or "percentile" (onnxruntime's calibrators)
    [default]                       # every Gemm/MatMul/Conv
    data_in_width = 8
    data_in_frac_width = "auto"     # a number, "auto" (calibration) or "NA" (width // 2)
    weight_width = 8
    [by_type.conv]                  # gemm, matmul, conv; "linear" means gemm and matmul
    weight_width = 4
    [by_type.linear]
    activation = "dynamic"          # activations quantized at run time (DynamicQuantizeLinear)
    weight_granularity = "per_channel"
    [by_type.gather]                # embedding tables (Gather of a constant): weight-only
    weight_width = 4                # with storage = "packed": INT4 on disk
    [by_name."node_Gemm_8"]
    enabled = false                 # the lab's name = "NA": leave this node in float

``[default]`` applies to every Gemm/MatMul/Conv; Gather tables are quantized only when a
``by_type.gather`` or ``by_name`` entry asks (only their ``weight_*`` keys apply).

Entries are overlays: a by-type entry changes only the keys it sets on top of ``default``,
and a by-name entry only its keys on top of that.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt

from onnxopt.config.base import StrictModel, registered
from onnxopt.runtime.cpu import target_names

MAX_FRAC = 32
"""Fraction bits: scales from 2**32 down to 2**-32 (the quantizer's ``FRAC_LIMIT``)."""

Width = Annotated[StrictInt, Field(ge=2, le=16)]
FracWidth = Annotated[StrictInt, Field(ge=-MAX_FRAC, le=MAX_FRAC)] | Literal["auto", "NA"]
WeightFracWidth = FracWidth | Literal["mse"]
"""Weights may also take ``"mse"``: per tensor or channel, the range fraction or one finer,
whichever loses less (:func:`~onnxopt.optimizer.quantization.fixed_point.frac_for_mse`)."""
OpTypeKey = Literal["gemm", "matmul", "conv", "linear", "gather"]
StorageMode = Literal["container", "packed"]
TargetCpu = Annotated[str, registered(target_names, "target CPU")]
WeightGranularity = Literal["per_tensor", "per_channel"]
ActivationMode = Literal["static", "dynamic"]
OP_TYPES: dict[str, tuple[str, ...]] = {
    "gemm": ("Gemm",),
    "matmul": ("MatMul",),
    "conv": ("Conv",),
    "linear": ("Gemm", "MatMul"),
    "gather": ("Gather",),
}


class LayerQuant(StrictModel):
    """How one layer (Gemm/MatMul/Conv, or a Gather table) is quantized; every key optional in
    an overlay.

    ``activation = "dynamic"`` quantizes the input at run time (onnxruntime's
    ``DynamicQuantizeLinear`` -> ``MatMulInteger`` path, Gemm/MatMul only): no calibration,
    the ``data_in_*``, ``data_out_*`` and ``bias_*`` keys do not apply (the bias stays float).
    ``weight_granularity`` overrides the model-wide ``granularity`` for this layer.
    """

    enabled: StrictBool = True
    activation: ActivationMode = "static"
    weight_granularity: WeightGranularity | None = None
    data_in_width: Width = 8
    data_in_frac_width: FracWidth = "auto"
    weight_width: Width = 8
    weight_frac_width: WeightFracWidth = "auto"
    bias_width: Width = 16
    bias_frac_width: FracWidth = "auto"
    data_out_width: Width | None = None
    data_out_frac_width: FracWidth = "auto"

    def overlay(self, other: LayerQuant) -> LayerQuant:
        """This config with the keys ``other`` set explicitly replaced by its values."""
        return self.model_copy(update={k: getattr(other, k) for k in other.model_fields_set})


class Calibration(StrictModel):
    """How activation ranges are observed for ``"auto"`` fractions."""

    method: Literal["minmax", "percentile"] = "minmax"
    percentile: StrictFloat = Field(99.999, gt=0, le=100)
    num_samples: StrictInt = Field(256, ge=1, le=100_000)


class QuantizationConfig(StrictModel):
    """The whole quantization config of one model."""

    target_cpu: TargetCpu = "auto"
    storage: StorageMode = "container"
    granularity: WeightGranularity = "per_tensor"
    calibration: Calibration = Calibration()
    default: LayerQuant = LayerQuant()
    by_type: dict[OpTypeKey, LayerQuant] = {}
    by_name: dict[str, LayerQuant] = {}

    def for_node(self, name: str, op_type: str) -> LayerQuant:
        """The merged config of one node: default, then its op type, then its name."""
        merged = self.default
        for key in ("linear", "gemm", "matmul", "conv", "gather"):
            if key in self.by_type and op_type in OP_TYPES[key]:
                merged = merged.overlay(self.by_type[key])
        if name in self.by_name:
            merged = merged.overlay(self.by_name[name])
        return merged
