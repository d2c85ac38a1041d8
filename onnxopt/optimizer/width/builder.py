"""Mutable state of the channel analysis: channel spaces joined by union-find.

A *space* is a set of channels followed through the graph; spaces joined by a residual Add
become one (union-find), and each finished space becomes a :class:`ChannelGroup`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import onnx_ir as ir

from onnxopt.graph import default_opset, value_name
from onnxopt.optimizer.width.groups import (
    ChannelAnalysis,
    ChannelGroup,
    Edit,
    WeightNode,
)


@dataclass
class _Space:
    width: int | None
    producers: list[int] = field(default_factory=list)
    consumers: list[int] = field(default_factory=list)
    edits: list[Edit] = field(default_factory=list)
    tensors: list[tuple[str, int | None]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Builder:
    """Spaces, the tensors assigned to them, and the weight nodes met on the way."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.nodes = list(graph)
        self.names = tuple(n.name or f"<{n.op_type} #{i}>" for i, n in enumerate(self.nodes))
        self.index = {id(n): i for i, n in enumerate(self.nodes)}
        self._parent: list[int] = []
        self._spaces: list[_Space] = []
        self._where: dict[str, tuple[int, int | None]] = {}
        self.weights: dict[int, WeightNode] = {}
        self.input_space: dict[int, int] = {}
        self.output_space: dict[int, int] = {}
        self.refusals: dict[int, tuple[str, int | None]] = {}
        self.opset = default_opset(graph, missing=1)
        """The default-domain opset (op semantics such as Softmax's axis depend on it)."""

    # --- spaces -----------------------------------------------------------------------
    def new_space(self, width: int | None, reason: str | None = None) -> int:
        """A fresh space (frozen with ``reason`` when given)."""
        self._parent.append(len(self._spaces))
        self._spaces.append(_Space(width, reasons=[reason] if reason else []))
        return len(self._spaces) - 1

    def find(self, sid: int) -> int:
        """The representative of ``sid``'s space."""
        while self._parent[sid] != sid:
            self._parent[sid] = self._parent[self._parent[sid]]
            sid = self._parent[sid]
        return sid

    def space(self, sid: int) -> _Space:
        """The (root) space ``sid`` belongs to."""
        return self._spaces[self.find(sid)]

    def union(self, a: int, b: int, note: str) -> int:
        """Join two spaces into one, recording why; returns the root."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        sa, sb = self._spaces[ra], self._spaces[rb]
        self._parent[rb] = ra
        if sa.width is not None and sb.width is not None and sa.width != sb.width:
            sa.reasons.append(f"{note} joins {sa.width} and {sb.width} channels")
        sa.width = sa.width if sa.width is not None else sb.width
        for attr in ("producers", "consumers", "edits", "tensors", "reasons", "notes"):
            getattr(sa, attr).extend(getattr(sb, attr))
        sa.notes.append(note)
        return ra

    def freeze(self, sid: int, reason: str) -> None:
        """Mark a space as not scalable, with the reason (recorded once)."""
        reasons = self.space(sid).reasons
        if reason not in reasons:
            reasons.append(reason)

    # --- tensors ----------------------------------------------------------------------
    def assign(self, value: ir.Value, sid: int, axis: int | None) -> None:
        """Record that ``value`` carries space ``sid``'s channels on ``axis``."""
        name = value_name(value)
        self._where[name] = (sid, axis)
        self.space(sid).tensors.append((name, axis))

    def lookup(self, value: ir.Value | None) -> tuple[int, int | None] | None:
        """``(root space, channel axis)`` of a tracked value, else None."""
        if value is None or value.name not in self._where:
            return None
        sid, axis = self._where[value.name]
        return self.find(sid), axis

    def tracked(self, value: ir.Value | None) -> bool:
        """True when the value carries tracked channels."""
        return value is not None and value.name in self._where

    def add_edit(self, sid: int, edit: Edit) -> None:
        """Record a change that scaling space ``sid`` implies."""
        self.space(sid).edits.append(edit)

    # --- weight nodes -----------------------------------------------------------------
    def consume(self, sid: int, node_index: int, edit: Edit) -> None:
        """Record a weight node reading space ``sid`` as its input channels."""
        space = self.space(sid)
        space.consumers.append(node_index)
        space.edits.append(edit)
        self.input_space[node_index] = sid

    def produce(self, node_index: int, width: int, edits: list[Edit]) -> int:
        """A new space holding a weight node's output channels."""
        sid = self.new_space(width)
        space = self.space(sid)
        space.producers.append(node_index)
        space.edits.extend(edits)
        self.output_space[node_index] = sid
        return sid

    def refuse(self, node_index: int, reason: str, sid: int | None = None) -> None:
        """Record why a Gemm, MatMul or Conv is not a weight node (``sid``: the space it is in)."""
        self.refusals.setdefault(node_index, (reason, sid))

    # --- result -----------------------------------------------------------------------
    def finish(self) -> ChannelAnalysis:
        """Freeze spaces without consumers and turn the spaces into groups."""
        order: dict[int, int] = {}
        for sid, _ in self._where.values():
            order.setdefault(self.find(sid), len(order))
        groups = []
        for root, gi in sorted(order.items(), key=lambda kv: kv[1]):
            groups.append(self._group(gi, self._spaces[root]))
        by_root = {root: gi for root, gi in order.items()}
        weights = {w.name: w for w in self.weights.values()}
        ins = {self.names[i]: by_root[self.find(s)] for i, s in self.input_space.items()}
        outs = {self.names[i]: by_root[self.find(s)] for i, s in self.output_space.items()}
        return ChannelAnalysis(
            groups=tuple(groups),
            weight_nodes=MappingProxyType(weights),
            input_group=MappingProxyType(ins),
            output_group=MappingProxyType(outs),
            node_names=self.names,
            ancestors=MappingProxyType(self._weight_ancestors()),
            refusals=MappingProxyType(self._refusals(groups, by_root)),
        )

    def _refusals(self, groups: list[ChannelGroup], by_root: dict[int, int]) -> dict[str, str]:
        out = {}
        for i, (reason, sid) in self.refusals.items():
            gi = by_root.get(self.find(sid)) if sid is not None else None
            if gi is not None:
                reason += "; " + _follows(groups[gi])
            out[self.names[i]] = f"{self.nodes[i].op_type} node {self.names[i]!r} {reason}"
        return out

    def _group(self, gi: int, space: _Space) -> ChannelGroup:
        reasons = list(space.reasons)
        if not space.consumers and not reasons:
            reasons.append("no Gemm, MatMul or Conv reads these channels")
        return ChannelGroup(
            index=gi,
            name=space.tensors[0][0],
            width=space.width,
            producers=tuple(self.names[i] for i in space.producers),
            consumers=tuple(self.names[i] for i in space.consumers),
            edits=tuple(space.edits),
            tensors=tuple(space.tensors),
            reasons=tuple(reasons),
            notes=tuple(space.notes),
        )

    def _weight_ancestors(self) -> dict[str, frozenset[str]]:
        upstream: list[frozenset[int]] = []
        for node in self.nodes:
            acc: set[int] = set()
            for value in node.inputs:
                producer = value.producer() if value is not None else None
                if producer is None or id(producer) not in self.index:
                    continue
                p = self.index[id(producer)]
                acc |= upstream[p]
                if p in self.weights:
                    acc.add(p)
            upstream.append(frozenset(acc))
        return {
            w.name: frozenset(self.names[p] for p in upstream[i]) for i, w in self.weights.items()
        }


def _follows(group: ChannelGroup) -> str:
    if group.frozen:
        return f"it belongs to group {group.name!r}, which is frozen ({'; '.join(group.reasons)})"
    if group.producers:
        names = ", ".join(group.producers)
        return f"it scales with group {group.name!r}: name its producer {names} instead"
    return f"it scales with group {group.name!r}"
