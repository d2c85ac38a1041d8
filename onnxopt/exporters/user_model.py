"""ONNX models made by other tools, made ready for onnxopt's rewrites.

Exporters differ in ways that do not change what a model computes but do change whether a
rewrite finds its weights or a runtime can batch it: weights held by ``Constant`` nodes
instead of initializers, initializers also listed as graph inputs (IR version < 4 requires
it), unnamed or duplicate node names, a batch axis fixed at export, symbolic dimensions a
user wants static, opsets older than the QDQ kernels need, BatchNormalization left after a
Conv or Gemm. :func:`prepare_user_model` repairs what is safe (onnx / onnx_ir / onnxscript
passes and :mod:`onnxopt.exporters.repairs`) and returns one note line per repair; every
repair that changes what runs is checked against the original on random inputs (the batch
at sizes 1 and 7, the opset conversion and the folds at batch 1), and what it cannot do is
refused with one line naming the problem and the fix. Every command that loads a user's
model (evaluate, quantize, scale, search, export) goes through it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from onnxopt.errors import ModelLoadError, first_line
from onnxopt.exporters import repairs
from onnxopt.exporters.conversion_check import check_conversion, check_unchanged
from onnxopt.graph import default_opset, is_default_domain
from onnxopt.model_io import load_onnx
from onnxopt.runtime.contained import stage

LIFT_MIN_ELEMENTS = 16
"""Constant-node tensors with at least this many elements are weights (lifted to initializers);
smaller ones are shapes, axes and scalars, which stay where the exporter put them."""


@dataclass(frozen=True)
class Preparation:
    """What preparing a user's model may change.

    Attributes:
        opset: The lowest default-domain opset needed (older models are converted); None
            keeps the model's opset.
        lower: Convert newer models down to ``opset`` too (``opset`` is then exact).
        input_shapes: Static shapes for inputs by name, the batch included
            (``--input-shape NAME=1,3,48,192``, ``[model.inputs.NAME] shape``); None
            leaves a dimension as the model has it (``?``). A batch given here stays fixed.
        keep_batch: Keep a batch axis fixed at export (``--batch-size-fixed``).
        fold: Fold BatchNormalization into the neighbouring layer and fold constants
            (onnxscript's optimizer); False leaves the graph's nodes as they are.
    """

    opset: int | None = None
    lower: bool = False
    input_shapes: Mapping[str, tuple[int | None, ...]] = field(default_factory=dict)
    keep_batch: bool = False
    fold: bool = True

    @property
    def batch_kept(self) -> bool:
        """Whether the batch axis stays as it is: asked for, or fixed by an input shape."""
        return self.keep_batch or any(s and s[0] is not None for s in self.input_shapes.values())


DEFAULTS = Preparation()
"""Every safe repair, no opset change."""


@dataclass(frozen=True)
class UserModel:
    """A model ready for the rewrites and what was changed to make it so.

    Attributes:
        model: The prepared model (a new proto; the loaded one is not modified).
        notes: One line per change made (opset converted, constants lifted...).
    """

    model: onnx.ModelProto
    notes: tuple[str, ...] = ()


def load_user_model(path: Path, preparation: Preparation = DEFAULTS) -> UserModel:
    """Load an ONNX file (see :func:`onnxopt.model_io.load_onnx`) and prepare it.

    Raises:
        ModelLoadError: The file cannot be read, or the model cannot be prepared.
    """
    notes: list[str] = []
    model = load_onnx(path, notes=notes)  # notes: sparse tensors made dense
    prepared = prepare_user_model(model, str(path), preparation)
    return UserModel(prepared.model, (*notes, *prepared.notes))


def prepare_user_model(
    model: onnx.ModelProto, source: str, preparation: Preparation = DEFAULTS
) -> UserModel:
    """Repair what is safe: weights, names, shapes, the batch axis, the opset, BatchNorm.

    Args:
        model: The loaded model; not modified.
        source: The file name, for messages.
        preparation: What may be changed.

    Raises:
        ModelLoadError: No input or an input that is not a tensor, a batch axis that
            cannot be freed, shapes that do not fit, or an opset conversion or fold that
            fails or changes the outputs.
    """
    with stage(f"preparing {source}"):
        return _prepare(model, source, preparation)


def _prepare(model: onnx.ModelProto, source: str, p: Preparation) -> UserModel:
    check_inputs(model, source)
    model, notes = _constants_as_weights(model, source)
    for repair in (
        lambda m: repairs.name_nodes(m, source),
        lambda m: repairs.fix_input_shapes(m, p.input_shapes, source),
        lambda m: _convert_checked(m, p, source),
        lambda m: repairs.free_batch_axis(m, source, keep=p.batch_kept),
        lambda m: _fold(m, source) if p.fold else (m, None),
    ):
        model, note = repair(model)
        notes += [note] if note else []
    return UserModel(model, tuple(notes))


def prepare_for_measurement(
    model: onnx.ModelProto, source: str, preparation: Preparation = DEFAULTS
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """The repairs ``evaluate`` makes in memory so a file is measured as it is: the static
    shapes given, the batch axis freed (when it cannot be, the model runs at its fixed batch
    and a note says so). The nodes are left as they are: the file is what is measured.

    Raises:
        ModelLoadError: Shapes that do not fit the inputs.
    """
    notes = []
    model, note = repairs.fix_input_shapes(model, preparation.input_shapes, source)
    notes += [note] if note else []
    try:
        model, note = repairs.free_batch_axis(model, source, keep=preparation.batch_kept)
    except ModelLoadError:
        batch = repairs.fixed_batch(model)
        note = (
            f"{source}: the batch axis stays fixed at {batch:,} (the graph holds the batch "
            "size); every run feeds that many samples"
        )
    notes += [note] if note else []
    return model, tuple(notes)


def _convert_checked(
    model: onnx.ModelProto, p: Preparation, source: str
) -> tuple[onnx.ModelProto, str | None]:
    if p.opset is None:
        return model, None
    converted, note = convert_opset(model, p.opset, source, lower=p.lower)
    if note is None:
        return model, None
    before, after = default_opset(model), default_opset(converted)
    # a large fixed batch would make the check feed that many rows: compare the two graphs
    # with only their declared batch relaxed (the computation is untouched; freeing the
    # batch for real is checked by the next step)
    original, changed = repairs.batch_declarations_relaxed(model, converted)
    unchecked = check_conversion(original, changed, source, before, after)
    return converted, note + (f"; outputs not compared: {unchecked}" if unchecked else "")


def _fold(model: onnx.ModelProto, source: str) -> tuple[onnx.ModelProto, str | None]:
    """BatchNorm folded into its Conv/Gemm/MatMul and constants folded, checked at batch 1."""
    from onnxopt.exporters.prepare import prepare_model

    if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return model, None  # nothing exact to gain: keep the graph as exported
    prepared = prepare_model(model)
    if not prepared.batchnorms_folded:
        return model, None
    check_unchanged(model, prepared.model, source, "folding BatchNormalization")
    left = prepared.batchnorms_left
    left_note = f", {left} left (not exact to fold)" if left else ""
    return prepared.model, (
        f"{source}: {prepared.batchnorms_folded} BatchNormalization node(s) folded into the "
        f"neighbouring Conv/Gemm/MatMul{left_note}"
    )


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


def check_inputs(model: onnx.ModelProto, source: str) -> None:
    """Refuse a model without inputs or with an input that is not a tensor.

    Raises:
        ModelLoadError: Naming the input and its type.
    """
    weights = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in weights]
    if not inputs:
        raise ModelLoadError(
            f"{source} has no inputs (every graph input is an initializer); onnxopt measures "
            "a model on data: re-export it with its inputs"
        )
    for value in inputs:
        if not value.type.HasField("tensor_type"):
            kind = value.type.WhichOneof("value") or "no type"
            raise ModelLoadError(
                f"{source}: input {value.name!r} is a {kind.replace('_type', '')}, not a "
                "tensor; re-export the model with tensor inputs"
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
