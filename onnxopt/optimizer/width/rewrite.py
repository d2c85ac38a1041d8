"""The width-scaling pass: rebuild every scaled group's channels from a channel index map.

New channel ``j`` of a group copies old channel ``index[j]``: producers' output weights and
every per-channel constant (bias, BatchNorm parameters and statistics, Q/DQ scales,
depthwise filters) are gathered with the map; consumers' input weights are gathered and
divided by the number of copies of each channel, so a widened model computes exactly what
the original did (Net2Net), and a shrunk one is the plain truncation that a refit improves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

from onnxopt.errors import RewriteError
from onnxopt.graph import Namer, const_array
from onnxopt.optimizer.width.groups import ChannelAnalysis, Edit, EditKind


@dataclass(frozen=True)
class ChannelMap:
    """How one group is rebuilt: new channel ``j`` copies old channel ``index[j]``.

    Attributes:
        old_width: Number of channels before scaling.
        index: Old channel of every new channel (int64, length = new width).
    """

    old_width: int
    index: np.ndarray

    def __post_init__(self) -> None:
        idx = np.asarray(self.index, dtype=np.int64)
        if idx.ndim != 1 or len(idx) == 0 or idx.min() < 0 or idx.max() >= self.old_width:
            raise RewriteError(f"a channel map needs 1+ indices in [0, {self.old_width})")
        object.__setattr__(self, "index", idx)

    @property
    def new_width(self) -> int:
        """Number of channels after scaling."""
        return len(self.index)

    @property
    def copies(self) -> np.ndarray:
        """How many new channels copy each new channel's source (for dividing weights)."""
        return np.bincount(self.index, minlength=self.old_width)[self.index]


@dataclass
class WidthPassResult(ir.passes.PassResult):
    """A :class:`PassResult` carrying the indices of the nodes the pass edited."""

    changed_nodes: frozenset[int] = frozenset()


class WidthScalingPass(ir.passes.InPlacePass):
    """Apply channel maps to the groups of an analysed model (in place: pass a fresh copy).

    Preconditions (:meth:`requires`): the model is the analysed one (same nodes) and every
    map fits its group. Postcondition (:meth:`ensures`): every constant the maps edited has
    the new width along its channel axis. The full ``onnx.checker`` check runs once on the
    finished model, after any refit (:func:`~onnxopt.optimizer.width.validate.validate_scaled`).

    Args:
        analysis: The channel analysis of the model this pass is applied to (same graph).
        maps: Group index -> channel map, for every group that changes width or order.
    """

    def __init__(self, analysis: ChannelAnalysis, maps: Mapping[int, ChannelMap]) -> None:
        super().__init__()
        self.analysis = analysis
        self.maps = dict(maps)

    def requires(self, model: ir.Model) -> None:
        if len(model.graph) != len(self.analysis.node_names):
            raise RewriteError("the model does not match its channel analysis (node count)")
        for gi, cmap in self.maps.items():
            group = self.analysis.groups[gi]
            if group.frozen or group.width != cmap.old_width:
                raise RewriteError(f"group {group.name!r} cannot take this channel map")

    def call(self, model: ir.Model) -> WidthPassResult:
        nodes = list(model.graph)
        arrays: dict[tuple[int, int], np.ndarray] = {}
        changed: set[int] = set()
        for gi, cmap in self.maps.items():
            group = self.analysis.groups[gi]
            for edit in group.edits:
                _apply(edit, cmap, nodes, arrays)
                changed.add(edit.node)
            _update_shapes(model.graph, group.tensors, cmap.new_width)
        names = Namer(model.graph)
        for (ni, k), array in arrays.items():
            set_const_input(model.graph, nodes[ni], k, array, names)
        common_passes.RemoveUnusedNodesPass()(model)
        return WidthPassResult(model, modified=bool(changed), changed_nodes=frozenset(changed))

    def ensures(self, model: ir.Model) -> None:
        nodes = list(model.graph)
        for gi, cmap in self.maps.items():
            for edit in self.analysis.groups[gi].edits:
                if edit.kind not in (EditKind.SLICE, EditKind.SPLIT):
                    continue
                array = const_array(nodes[edit.node].inputs[edit.input_index])
                if array is None or array.shape[edit.axis] != cmap.new_width:
                    raise RewriteError(
                        f"input {edit.input_index} of {nodes[edit.node].name!r} does not have "
                        f"{cmap.new_width} channels on axis {edit.axis} after scaling"
                    )


def _apply(edit: Edit, cmap: ChannelMap, nodes: list[ir.Node], arrays: dict) -> None:
    node = nodes[edit.node]
    if edit.kind is EditKind.GROUP_ATTR:
        node.attributes["group"] = ir.AttrInt64("group", cmap.new_width)
        return
    key = (edit.node, edit.input_index)
    if key not in arrays:
        original = const_array(node.inputs[edit.input_index])
        if original is None:
            raise RewriteError(f"input {edit.input_index} of {node.name!r} is no longer constant")
        arrays[key] = original
    array = arrays[key]
    if edit.kind is EditKind.SHAPE_ENTRY:
        array = array.copy()
        array[edit.axis] = cmap.new_width
    else:
        array = np.take(array, cmap.index, axis=edit.axis)
        if edit.kind is EditKind.SPLIT:
            shape = [1] * array.ndim
            shape[edit.axis] = cmap.new_width
            array = (array / cmap.copies.reshape(shape)).astype(array.dtype)
    arrays[key] = array


def _update_shapes(graph: ir.Graph, tensors, width: int) -> None:
    values = {v.name: v for node in graph for v in node.outputs if v is not None}
    for name, axis in tensors:
        value = values.get(name)
        if value is None or value.shape is None or axis is None:
            continue
        dims = list(value.shape)
        dims[axis] = width
        value.shape = ir.Shape(dims)


def set_const_input(
    graph: ir.Graph, node: ir.Node, index: int, array: np.ndarray, names: Namer
) -> None:
    """Make input ``index`` of ``node`` the constant ``array``.

    An initializer used by this node alone is replaced in place (same name); anything
    shared, or a Constant node's output, is left to its other users and a fresh initializer
    is wired in instead.
    """
    old = node.inputs[index] if index < len(node.inputs) else None
    array = np.ascontiguousarray(array)
    if old is not None and old.is_initializer() and len(old.uses()) == 1:
        old.const_value = ir.Tensor(array, name=old.name)
        old.shape = ir.Shape(array.shape)
        return
    base = old.name if old is not None and old.name else f"{node.name or node.op_type}_in{index}"
    name = names(f"{base}_scaled")
    value = ir.Value(
        name=name,
        shape=ir.Shape(array.shape),
        type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
        const_value=ir.Tensor(array, name=name),
    )
    graph.register_initializer(value)
    if index >= len(node.inputs):
        node.resize_inputs(index + 1)
    node.replace_input_with(index, value)
