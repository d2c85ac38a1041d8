"""Width-scaling config in the lab's vocabulary: a ``channel_multiplier`` and a mode per node.

Example (``w.toml``)::

    importance = "activation"      # or "weight_norm"
    refit = "ridge"                # or "none" (plain truncation of the kept channels)
    ridge = 1e-3

    [layers.node_linear]
    mode = "output_only"
    channel_multiplier = [0.25, 0.5, 1.0, 2.0]   # choices for the search; one value for `scale`

    [layers.node_linear_1]
    mode = "both"
    channel_multiplier = 0.5

Keys under ``layers`` are ONNX node names (Gemm, MatMul or Conv with constant weights).
Modes on node N with multiplier m: ``output_only`` scales N's output channels (and so the
input channels of every consumer in the same channel group); ``input_only`` scales the group
feeding N's input; ``both`` scales both groups. Bounds that depend on the model (a multiplier
rounding to zero channels, two nodes giving one group different values) are checked when
the config meets a model, see :mod:`onnxopt.optimizer.width.plan`.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BeforeValidator, Field, StrictFloat, field_validator

from onnxopt.config.base import StrictModel

MIN_MULTIPLIER = 1 / 64
"""The smallest multiplier accepted: below it a search explores pointless, collapsed models."""

MAX_MULTIPLIER = 16.0
"""The largest multiplier accepted: 16x per group already means 256x the weights of a layer."""


class Mode(enum.StrEnum):
    """Which channel groups of a named node a multiplier applies to."""

    OUTPUT_ONLY = "output_only"
    BOTH = "both"
    INPUT_ONLY = "input_only"


class Importance(enum.StrEnum):
    """How channels are ranked when a group shrinks (the most important are kept).

    ``ACTIVATION``: channel c scores ``sum_k rms(x_c) * ||W_k[:, c]||`` over the group's
    consumers k, with the RMS of c's activation at consumer k's input on calibration data:
    the size of the channel's contribution to the consumers' outputs.
    ``WEIGHT_NORM``: the data-free path norm ``sum_p ||W_p[c, :]|| * sum_k ||W_k[:, c]||``
    over producers p and consumers k.
    """

    ACTIVATION = "activation"
    WEIGHT_NORM = "weight_norm"


class Refit(enum.StrEnum):
    """What happens to the consumers of a shrunk group.

    ``RIDGE``: their weights are refitted by ridge-regularised least squares on calibration
    activations of the shrunk model, layer by layer, targeting the original outputs.
    ``NONE``: their weights are truncated to the kept channels (the baseline).
    """

    RIDGE = "ridge"
    NONE = "none"


def _as_tuple(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (value,)
    return value


Multipliers = Annotated[tuple[StrictFloat, ...], BeforeValidator(_as_tuple)]
"""Bounded by :data:`MIN_MULTIPLIER` and :data:`MAX_MULTIPLIER` in ``LayerWidth``'s validator."""


class LayerWidth(StrictModel):
    """One node's entry: the mode and the multiplier (one value, or choices for the search)."""

    mode: Mode = Mode.OUTPUT_ONLY
    channel_multiplier: Multipliers = Field(
        description="a multiplier, or the list of choices a search picks from"
    )

    @field_validator("channel_multiplier")
    @classmethod
    def _check_multipliers(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if not values:
            raise ValueError("give at least one multiplier")
        for m in values:
            if not MIN_MULTIPLIER <= m <= MAX_MULTIPLIER:
                raise ValueError(
                    f"multiplier {m} is outside [{MIN_MULTIPLIER:g}, {MAX_MULTIPLIER:g}] "
                    "(1/64 to 16); pick a value in range"
                )
        if len(set(values)) != len(values):
            raise ValueError(f"multipliers {list(values)} repeat a value; list each choice once")
        return values


class WidthConfig(StrictModel):
    """The width-scaling config: per-node multipliers plus how shrinking chooses and refits.

    Attributes:
        layers: Entries by ONNX node name.
        importance: How channels are ranked when shrinking (and which ones widening copies).
        refit: Whether consumers of shrunk groups are refitted (``ridge``) or truncated.
        ridge: Ridge strength relative to the mean eigenvalue of the activation covariance
            (``lambda = ridge * trace(G) / d``). Needed when a consumer has more inputs than
            there are calibration samples (digits-wide at 0.5x with 256 samples).
    """

    layers: dict[str, LayerWidth] = Field(default_factory=dict)
    importance: Importance = Importance.ACTIVATION
    refit: Refit = Refit.RIDGE
    ridge: StrictFloat = Field(1e-3, ge=0.0, le=10.0)

    def needs_calibration(self) -> bool:
        """True when scaling with this config may read calibration activations.

        Activation importance always does; a ridge refit does when a group shrinks.
        """
        return self.importance is Importance.ACTIVATION or self.refit is Refit.RIDGE

    def is_fixed(self) -> bool:
        """True when every entry has a single multiplier (as ``onnxopt scale`` needs)."""
        return all(len(layer.channel_multiplier) == 1 for layer in self.layers.values())
