"""ONNX models made by other tools, made ready for onnxopt's rewrites.

Exporters differ in ways that do not change what a model computes but do change whether a
rewrite finds its weights: weights held by ``Constant`` nodes instead of initializers,
initializers also listed as graph inputs (IR version < 4 requires it, some exporters keep
doing it), opsets older than the QDQ kernels need. :func:`prepare_user_model` evens these
out with onnx / onnx_ir passes and returns what it changed as notes for the user; what it
cannot work with (several inputs, a non-float input, an opset the converter cannot raise)
is refused with one line naming the problem and the fix. A converted model is run in
onnxruntime next to the original on one small input: a conversion that changes the outputs
is refused too (every command that loads a user's model gets this check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxopt.errors import ModelLoadError, first_line
from onnxopt.exporters.conversion_check import check_conversion
from onnxopt.graph import default_opset, is_default_domain
from onnxopt.model_io import load_onnx

LIFT_MIN_ELEMENTS = 16
"""Constant-node tensors with at least this many elements are weights (lifted to initializers);
smaller ones are shapes, axes and scalars, which stay where the exporter put them."""


@dataclass(frozen=True)
class UserModel:
    """A model ready for the rewrites and what was changed to make it so.

    Attributes:
        model: The prepared model (a new proto; the loaded one is not modified).
        notes: One line per change made (opset converted, constants lifted...).
    """

    model: onnx.ModelProto
    notes: tuple[str, ...] = ()


def load_user_model(path: Path, *, opset: int | None = None, lower: bool = False) -> UserModel:
    """Load an ONNX file (see :func:`onnxopt.model_io.load_onnx`) and prepare it.

    Args:
        path: The ``.onnx`` file.
        opset: The lowest default-domain opset the caller needs (older models are
            converted); None keeps the model's opset.
        lower: Convert newer models down to ``opset`` too (``opset`` is then exact).

    Raises:
        ModelLoadError: The file cannot be read, or the model cannot be prepared.
    """
    notes: list[str] = []
    model = load_onnx(path, notes=notes)  # notes: sparse tensors made dense
    prepared = prepare_user_model(model, str(path), opset=opset, lower=lower)
    return UserModel(prepared.model, (*notes, *prepared.notes))


def prepare_user_model(
    model: onnx.ModelProto, source: str, *, opset: int | None = None, lower: bool = False
) -> UserModel:
    """Treat constant tensors as weights, check the one float input, raise the opset.

    Args:
        model: The loaded model; not modified.
        source: The file name, for messages.
        opset: The lowest default-domain opset needed; None keeps the model's opset.
        lower: Convert a newer model down to ``opset`` too.

    Raises:
        ModelLoadError: Several inputs or none, an input that is not float32, or an opset
            conversion that fails or changes the outputs.
    """
    model, notes = _constants_as_weights(model, source)
    model = _name_unnamed_nodes(model)
    check_single_float_input(model, source)
    if opset is not None:
        converted, note = convert_opset(model, opset, source, lower=lower)
        if note:
            before, after = default_opset(model), default_opset(converted)
            unchecked = check_conversion(model, converted, source, before, after)
            notes += [note + (f"; outputs not compared: {unchecked}" if unchecked else "")]
        model = converted
    return UserModel(model, tuple(notes))


def _constants_as_weights(model: onnx.ModelProto, source: str) -> tuple[onnx.ModelProto, list[str]]:
    import onnx_ir as ir
    from onnx_ir.passes.common import (
        LiftConstantsToInitializersPass,
        RemoveInitializersFromInputsPass,
    )

    constants = sum(1 for n in model.graph.node if n.op_type == "Constant" and n.domain == "")
    weights = {t.name for t in model.graph.initializer}
    as_inputs = [i.name for i in model.graph.input if i.name in weights]
    if not constants and not as_inputs:
        return model, []  # nothing to even out: keep the proto exactly as exported
    try:
        ir_model = ir.serde.deserialize_model(model)  # a copy: the caller's proto is untouched
        LiftConstantsToInitializersPass(size_limit=LIFT_MIN_ELEMENTS)(ir_model)
        if as_inputs:
            # an initializer that is also an input could be overridden at run time, so the
            # rewrites would not treat it as a weight; onnxopt never feeds them
            RemoveInitializersFromInputsPass()(ir_model)
            ir_model.ir_version = max(ir_model.ir_version or 0, 4)  # IR < 4 needs them as inputs
        out = ir.serde.serialize_model(ir_model)
    except Exception as exc:  # onnx_ir raises SerdeError, TypeError, ValueError on bad protos
        raise ModelLoadError(
            f"{source} holds malformed tensors or attributes ({first_line(exc, 200)}); "
            "re-export or re-download the model"
        ) from None
    notes = []
    if as_inputs:
        notes.append(
            f"{source}: {len(as_inputs)} initializer(s) were also graph inputs "
            f"({_names(as_inputs)}); treated as constant weights"
        )
    count = constants - sum(1 for n in out.graph.node if n.op_type == "Constant" and n.domain == "")
    if count:
        notes.append(
            f"{source}: {count} Constant-node tensor(s) moved to initializers so the rewrites "
            "treat them as weights"
        )
    return out, notes


def _name_unnamed_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give unnamed nodes a unique ``<OpType>_<index>`` name (no note: the reports show the
    names): the rewrites (quantization by node, width layers) address nodes by name."""
    unnamed = [i for i, n in enumerate(model.graph.node) if not n.name]
    if not unnamed:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    used = {n.name for n in out.graph.node}
    for i in unnamed:
        node = out.graph.node[i]
        name, k = f"{node.op_type}_{i}", 1
        while name in used:
            name, k = f"{node.op_type}_{i}_{k}", k + 1
        node.name = name
        used.add(name)
    return out


def check_single_float_input(model: onnx.ModelProto, source: str) -> None:
    """Refuse a model that does not take exactly one float32 tensor of features.

    Raises:
        ModelLoadError: Naming the inputs (or the input's type) and the fix.
    """
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if len(inputs) != 1:
        listed = f" ({_names([i.name for i in inputs])})" if inputs else ""
        raise ModelLoadError(
            f"{source} has {len(inputs)} inputs{listed}; onnxopt feeds one tensor of features: "
            "re-export the model with a single input (fold the others in as constants)"
        )
    tensor_type = inputs[0].type.tensor_type
    elem = tensor_type.elem_type if inputs[0].type.HasField("tensor_type") else 0
    if elem != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(elem).lower() if elem else "not a tensor"
        raise ModelLoadError(
            f"{source}: input {inputs[0].name!r} is {kind}; onnxopt feeds float32 features: "
            "re-export the model with a float32 input (cast inside it if it needs another type)"
        )


def convert_opset(
    model: onnx.ModelProto, opset: int, source: str, *, lower: bool = False
) -> tuple[onnx.ModelProto, str | None]:
    """Raise (or, with ``lower``, also lower) the default-domain opset with onnx's converter.

    The outputs are not compared here: :func:`check_conversion` does that.

    Returns:
        The model (converted or as given) and a note saying what was converted, or None.

    Raises:
        ModelLoadError: When the converter fails (it has no adapter for some ops).
    """
    before = default_opset(model)
    if before == opset or (before > opset and not lower):
        return model, None
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises bare RuntimeError / ValidationError
        fix = (
            f"re-export the model at opset {opset}"
            if before < opset
            else f"keep opset {before} (--opset {before}) or re-export the model at opset {opset}"
        )
        raise ModelLoadError(
            f"{source}: onnx's version converter cannot take opset {before} to {opset} "
            f"({_converter_reason(exc, model)}); {fix}"
        ) from None
    return converted, f"{source}: converted from opset {before} to {opset} (onnx version converter)"


def _converter_reason(exc: Exception, model: onnx.ModelProto) -> str:
    # The converter's messages are C++ assertions with unformatted '%s': name unknown ops.
    ops = {n.op_type for n in model.graph.node if is_default_domain(n.domain)}
    unknown = sorted(op for op in ops if not onnx.defs.has(op))
    if unknown:
        return f"op {_names(unknown)} is not (or no longer) part of ONNX"
    return re.sub(r"^.*Assertion `.*` failed: ", "", first_line(exc, 200))




def _names(names: list[str], limit: int = 6) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more
