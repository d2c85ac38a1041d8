"""Channel groups: which channels of an ONNX graph must be scaled together.

A producer's output channels (Gemm, MatMul or Conv with constant weights), every tensor they
flow through unchanged channel by channel (bias Add, BatchNormalization, Relu/Clip and other
activations, Q/DQ, pooling, depthwise Conv, unit-dimension Reshape/Flatten) and the input
channels of every consumer form one group. A residual Add (or any elementwise op joining two
tracked tensors) joins their groups into one. Groups that cannot be scaled consistently are
frozen with their reasons: graph inputs and outputs, Reshape/Flatten mixing channels with
space, Concat (it joins several tensors' channels into one axis), Softmax-like ops that
normalize across channels (before opset 13 every axis from ``axis`` on), grouped Conv,
quantized weights and any op whose channel behaviour is unknown. A Gemm, MatMul or Conv that
is not a weight node gets its reason in :attr:`ChannelAnalysis.refusals`.

The analysis is plain data (node indices in graph order, value names, axes), so one analysis
of a pristine base model serves every later rewrite of a fresh copy of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


class EditKind(enum.StrEnum):
    """What scaling a group does to one constant or attribute."""

    SLICE = "slice"
    """Take the group's channel index map along ``axis`` of a constant input."""
    SPLIT = "split"
    """As SLICE, then divide each channel by its number of copies (a consumer's weights)."""
    GROUP_ATTR = "group"
    """Set a depthwise Conv's ``group`` attribute to the new width."""
    SHAPE_ENTRY = "shape"
    """Set entry ``axis`` of a Reshape's constant shape to the new width."""


@dataclass(frozen=True)
class Edit:
    """One change scaling a group implies: ``kind`` on input ``input_index`` of node ``node``."""

    kind: EditKind
    node: int
    input_index: int
    axis: int


@dataclass(frozen=True)
class WeightNode:
    """A Gemm, MatMul or Conv with constant weights: a producer and/or consumer of channels.

    Attributes:
        index: Position of the node in graph order.
        name: Node name (``<OpType #index>`` when the node has none).
        op_type: ``Gemm``, ``MatMul`` or ``Conv``.
        input_name: Name of the data input.
        output_name: Name of the output.
        out_axis: Axis of the weight that holds output channels.
        in_axis: Axis of the weight that holds input channels.
        bias: ``(node index, input index)`` of the per-output-channel bias constant, if any
            (for MatMul, the constant of a following bias Add).
        attrs: Attributes the refit needs (alpha/beta for Gemm; pads, strides, dilations for Conv).
    """

    index: int
    name: str
    op_type: str
    input_name: str
    output_name: str
    out_axis: int
    in_axis: int
    bias: tuple[int, int] | None
    attrs: MappingProxyType[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are scaled together.

    Attributes:
        index: Position in :attr:`ChannelAnalysis.groups`.
        name: The first tensor holding the group's channels (a producer output or graph input).
        width: Number of channels (None when unknown, which only frozen groups can be).
        producers: Names of the nodes whose output channels these are.
        consumers: Names of the nodes whose input channels these are.
        edits: What scaling the group changes.
        tensors: ``(value name, channel axis)`` of every tensor carrying the channels.
        reasons: Why the group is frozen; empty when it can be scaled.
        notes: How the group came to be (groups joined by a residual Add, and so on).
    """

    index: int
    name: str
    width: int | None
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    edits: tuple[Edit, ...]
    tensors: tuple[tuple[str, int | None], ...]
    reasons: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def frozen(self) -> bool:
        """True when the group cannot be scaled."""
        return bool(self.reasons)

    def describe(self) -> str:
        """One line naming the group, its width, its nodes and, if frozen, why."""
        prod = ", ".join(self.producers) or "-"
        cons = ", ".join(self.consumers) or "-"
        width = "?" if self.width is None else self.width
        text = f"group {self.name!r} ({width} channels; producers {prod}; consumers {cons})"
        if self.notes:
            text += "; " + "; ".join(self.notes)
        return text + (": frozen (" + "; ".join(self.reasons) + ")" if self.frozen else "")


@dataclass(frozen=True)
class ChannelAnalysis:
    """The channel groups of one model, and the weight nodes that produce and consume them.

    Attributes:
        groups: Every group, in graph order of its first tensor.
        weight_nodes: Gemm/MatMul/Conv nodes with constant weights, by name.
        input_group: Weight node name -> index of the group its input channels belong to.
        output_group: Weight node name -> index of the group its output channels belong to.
        node_names: Display name of every node, by index in graph order.
        ancestors: Weight node name -> names of the weight nodes upstream of it.
        refusals: Gemm/MatMul/Conv node name -> why it is not a weight node (one sentence
            starting with the node, e.g. weights produced by another node, depthwise Conv).
    """

    groups: tuple[ChannelGroup, ...]
    weight_nodes: MappingProxyType[str, WeightNode]
    input_group: MappingProxyType[str, int]
    output_group: MappingProxyType[str, int]
    node_names: tuple[str, ...]
    ancestors: MappingProxyType[str, frozenset[str]]
    refusals: MappingProxyType[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def frozen_groups(self) -> tuple[ChannelGroup, ...]:
        """Groups that cannot be scaled, each with its reasons."""
        return tuple(g for g in self.groups if g.frozen)

    @property
    def scalable_groups(self) -> tuple[ChannelGroup, ...]:
        """Groups that can be scaled."""
        return tuple(g for g in self.groups if not g.frozen)

    def group(self, name: str) -> ChannelGroup:
        """The group called ``name`` (KeyError when there is none)."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)
