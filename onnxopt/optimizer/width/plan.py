"""From a config to channel maps: which groups scale, by how much, and which channels survive.

Config entries name nodes; each resolves to one or two channel groups (by its mode). Entries
that give one group different multipliers are a :class:`ConfigError` naming both, as is a
multiplier rounding a group to zero channels or targeting a frozen group.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from onnxopt.config.width import Importance, Mode, WidthConfig
from onnxopt.errors import ConfigError, did_you_mean
from onnxopt.optimizer.width.groups import ChannelAnalysis, ChannelGroup
from onnxopt.optimizer.width.rewrite import ChannelMap


@dataclass(frozen=True)
class GroupSetting:
    """The multiplier choices of one group, the config entries that set them, and the key
    of the first of them (``layers.<node>``, for messages)."""

    group: int
    choices: tuple[float, ...]
    sources: tuple[str, ...]
    key: str


def new_width(width: int, multiplier: float) -> int:
    """``round(width * multiplier)``, halves rounded up (so 0.5 x 3 channels gives 2)."""
    return int(math.floor(width * multiplier + 0.5))


def _sides(mode: Mode) -> tuple[str, ...]:
    return {Mode.OUTPUT_ONLY: ("output",), Mode.INPUT_ONLY: ("input",)}.get(
        mode, ("input", "output")
    )


def _group_of(analysis: ChannelAnalysis, node: str, side: str) -> ChannelGroup:
    if node not in analysis.weight_nodes:
        if node in analysis.refusals:
            raise ConfigError(f"layers.{node}: {analysis.refusals[node]}")
        if node in analysis.node_names:
            raise ConfigError(
                f"layers.{node}: the node is not a Gemm, MatMul or Conv with "
                "constant weights; channel_multiplier applies to those only"
            )
        raise ConfigError(
            f"layers.{node}: no such node; {did_you_mean(node, analysis.weight_nodes)}"
        )
    table = analysis.input_group if side == "input" else analysis.output_group
    if node not in table:
        raise ConfigError(
            f"layers.{node}: its input is a constant, not a channel group; use mode 'output_only'"
        )
    group = analysis.groups[table[node]]
    if group.frozen:
        raise ConfigError(
            f"layers.{node}: its {side} channels are group {group.name!r}, which "
            f"is frozen ({'; '.join(group.reasons)}); drop the entry or change "
            "its mode"
        )
    return group


def resolve(config: WidthConfig, analysis: ChannelAnalysis) -> dict[int, GroupSetting]:
    """The multiplier choices per group that a config asks for.

    Raises:
        ConfigError: For unknown or unsuitable nodes, frozen groups, a multiplier rounding a
            group to zero channels, or two entries giving one group different multipliers.
    """
    settings: dict[int, GroupSetting] = {}
    for node, layer in config.layers.items():
        for side in _sides(layer.mode):
            group = _group_of(analysis, node, side)
            source = f"layers.{node} ({layer.mode.value}, {side} channels)"
            for m in layer.channel_multiplier:
                if new_width(group.width or 0, m) < 1:
                    raise ConfigError(
                        f"layers.{node}.channel_multiplier: {m:g} x {group.width} channels of "
                        f"group {group.name!r} rounds to 0 channels; use at least "
                        f"{0.5 / (group.width or 1):.4g}"
                    )
            known = settings.get(group.index)
            if known is not None and known.choices != layer.channel_multiplier:
                raise ConfigError(
                    f"{known.sources[0]} and {source} give channel group {group.name!r} "
                    f"different multipliers {list(known.choices)} and "
                    f"{list(layer.channel_multiplier)}; a group scales as one, so give both "
                    "the same value or drop one entry"
                )
            sources = (known.sources if known else ()) + (source,)
            key = known.key if known else f"layers.{node}"
            settings[group.index] = GroupSetting(
                group.index, layer.channel_multiplier, sources, key
            )
    return settings


def choose(
    settings: Mapping[int, GroupSetting],
    analysis: ChannelAnalysis,
    picks: Mapping[str, float] | None = None,
) -> dict[int, float]:
    """One multiplier per group: from ``picks`` (by group name) or the group's only choice.

    Raises:
        ConfigError: When a group with several choices has no pick, a pick is not among the
            choices, or a pick names a group the config does not scale.
    """
    picks = dict(picks or {})
    chosen: dict[int, float] = {}
    for gi, setting in settings.items():
        name = analysis.groups[gi].name
        if name in picks:
            m = float(picks.pop(name))
            if m not in setting.choices:
                raise ConfigError(
                    f"group {name!r}: {m:g} is not among the choices "
                    f"{list(setting.choices)} of {setting.sources[0]}"
                )
        elif len(setting.choices) == 1:
            m = setting.choices[0]
        else:
            raise ConfigError(
                f"{setting.key}: channel_multiplier = {list(setting.choices)} is a list of "
                "choices for the search; onnxopt scale needs one number, e.g. "
                f"channel_multiplier = {setting.choices[0]!r}"
            )
        chosen[gi] = m
    if picks:
        names = [analysis.groups[gi].name for gi in settings]
        bad = next(iter(picks))
        raise ConfigError(
            f"choice for group {bad!r}, which the config does not scale; {did_you_mean(bad, names)}"
        )
    return chosen


def importance(
    group: ChannelGroup,
    kind: Importance,
    weight: Callable[[str, str], np.ndarray],
    input_rms: Mapping[str, np.ndarray] | None,
) -> np.ndarray:
    """Importance of each channel of a group (see :class:`Importance` for the definitions).

    Args:
        group: The group.
        kind: Which importance.
        weight: ``weight(node, side)`` -> per-channel L2 norms of a node's weights along its
            ``"input"`` or ``"output"`` channel axis.
        input_rms: Node name -> RMS of each channel at that consumer's input (activation).
    """
    incoming = sum((weight(c, "input") for c in group.consumers), np.zeros(group.width or 0))
    if kind is Importance.ACTIVATION:
        if input_rms is None:
            raise ConfigError(
                "importance 'activation' needs calibration data; pass it or use "
                "importance = 'weight_norm'"
            )
        return sum((input_rms[c] * weight(c, "input") for c in group.consumers), incoming * 0)
    outgoing = sum((weight(p, "output") for p in group.producers), np.zeros(group.width or 0))
    return outgoing * incoming


def channel_map(width: int, multiplier: float, scores: np.ndarray) -> ChannelMap:
    """Keep the ``round(width * m)`` best channels in order, or append copies of the best."""
    target = new_width(width, multiplier)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if target <= width:
        return ChannelMap(width, np.sort(order[:target]))
    return ChannelMap(width, np.concatenate([np.arange(width), np.resize(order, target - width)]))
