"""Small read-only questions about onnx_ir graphs, and fresh names for the nodes a pass adds."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

DEFAULT_DOMAINS = ("", "ai.onnx")
"""The two spellings of ONNX's default operator domain."""


def is_default_domain(domain: str) -> bool:
    """Whether ``domain`` is ONNX's default operator domain."""
    return domain in DEFAULT_DOMAINS


def default_opset(model: ir.Model | ir.Graph | onnx.ModelProto, missing: int = 0) -> int:
    """The model's default-domain opset version (``missing`` when it declares none)."""
    if isinstance(model, onnx.ModelProto):
        found = [o.version for o in model.opset_import if is_default_domain(o.domain)]
        return int(found[0]) if found else missing
    imports = model.opset_imports
    return int(imports.get("", imports.get("ai.onnx", missing)))


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The value's constant contents (an initializer or a Constant node's), else None.

    An initializer that is also a graph input can be overridden at run time: not a constant.
    """
    if value is None or value.is_graph_input():
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:  # a Constant node whose attribute onnx_ir cannot read as a tensor
        return None
    return None if tensor is None else tensor.numpy()


def const_input(node: ir.Node, index: int) -> np.ndarray:
    """The contents of a node input the caller already knows is constant (a weight node's
    weights, the bias it matched).

    Raises:
        ValueError: the input is omitted or not a constant.
    """
    array = const_array(node.inputs[index] if index < len(node.inputs) else None)
    if array is None:
        raise ValueError(f"node {node.name!r} ({node.op_type}): input {index} is not a constant")
    return array


def input_value(node: ir.Node, index: int) -> ir.Value:
    """The node's ``index``-th input, which the caller's pattern requires to be present.

    Raises:
        ValueError: the input is omitted (an empty optional input) or out of range.
    """
    value = node.inputs[index] if index < len(node.inputs) else None
    if value is None:
        raise ValueError(f"node {node.name!r} ({node.op_type}) has no input {index}")
    return value


def value_name(value: ir.Value | None) -> str:
    """The name of a present value (every value read from a ``ModelProto`` has one).

    Raises:
        ValueError: the value is omitted or was never named.
    """
    if value is None or value.name is None:
        raise ValueError(f"expected a named value, got {value!r}")
    return value.name


def attr_value(node: ir.Node, name: str, default: Any) -> Any:
    """The value of a node's attribute, or ``default`` when it is not set."""
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def rank_of(value: ir.Value | None) -> int | None:
    """The value's rank from shape inference, or None."""
    return None if value is None or value.shape is None else len(value.shape)


class Namer:
    """Hands out node and value names unused anywhere in a graph (subgraphs included)."""

    def __init__(self, graph: ir.Graph) -> None:
        self._used: set[str] = {v.name for v in graph.inputs if v.name}
        self._used |= set(graph.initializers)
        for node in ir.traversal.RecursiveGraphIterator(graph):
            values = (*node.inputs, *node.outputs)
            self._used |= {v.name for v in values if v is not None and v.name}
            if node.name:
                self._used.add(node.name)

    def __call__(self, base: str) -> str:
        """``base`` itself when free, else ``base_1``, ``base_2``, ..."""
        name, i = base, 1
        while name in self._used:
            name, i = f"{base}_{i}", i + 1
        self._used.add(name)
        return name


def to_ir(model: onnx.ModelProto | ir.Model) -> ir.Model:
    """An onnx_ir model (a proto is deserialized; an ir model is returned as is)."""
    return model if isinstance(model, ir.Model) else ir.from_proto(model)


def to_proto(model: onnx.ModelProto | ir.Model) -> onnx.ModelProto:
    """A ``ModelProto`` (an ir model is serialized; a proto is returned as is)."""
    return model if isinstance(model, onnx.ModelProto) else ir.to_proto(model)


def run_pass(pass_: ir.passes.PassBase, model: ir.Model) -> ir.passes.PassResult:
    """Run an onnx_ir pass; a precondition or postcondition that failed with one of our
    errors raises that error (the one line the user sees), not onnx_ir's wrapper."""
    from onnxopt.errors import OnnxoptError

    try:
        return pass_(model)
    except (ir.passes.PreconditionError, ir.passes.PostconditionError) as exc:
        if isinstance(exc.__cause__, OnnxoptError):
            raise exc.__cause__ from None
        raise
