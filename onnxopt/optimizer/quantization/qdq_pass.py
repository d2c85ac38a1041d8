"""The fixed-point QDQ pass: materializes :class:`NodeQuantSpec` s as Q/DQ nodes.

Nodes with dynamic activations (Gemm/MatMul) and Gather tables (weight-only) are rewritten
by :mod:`~onnxopt.optimizer.quantization.integer_nodes`. For every other Gemm / MatMul
(constant weight) / Conv named in the specs the pass inserts
``Q -> (Clip) -> DQ`` on the activation input, replaces the float weight by an integer
initializer behind a DequantizeLinear (scale ``2**-f``, an explicit zero point, per channel
when asked), the bias by an int32 initializer at the accumulator scale ``2**-(f_in + f_w)``,
and optionally quantizes the output. Other named nodes are reported as skipped.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import DeduplicateInitializersPass

from onnxopt.errors import ConfigError, RewriteError, did_you_mean, first_line
from onnxopt.graph import default_opset, run_pass
from onnxopt.model_io import CHECK_ERRORS, check_full
from onnxopt.optimizer.quantization.float_nodes import float_nodes
from onnxopt.optimizer.quantization.graph_analysis import unsupported_reason
from onnxopt.optimizer.quantization.labels import HonestLabel, node_labels
from onnxopt.optimizer.quantization.metadata import BIT_WIDTHS_KEY, TARGET_CPU_KEY
from onnxopt.optimizer.quantization.node_rewriter import NodeRewriter
from onnxopt.optimizer.quantization.spec import (
    ActivationMode,
    NodeQuantSpec,
    Role,
    Storage,
    choose_container,
)
from onnxopt.runtime.cpu import AUTO, resolve_target

DEFAULT_OPSET = 21


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    """What the pass did.

    Attributes:
        quantized: Names of the quantized nodes, in graph order.
        skipped: Node name -> why it was not quantized (unsupported op or form).
        labels: Honest labels: widths that buy no storage or speed in onnxruntime, and
            why a node may not fuse (checked against onnxruntime's optimized graph by
            :meth:`~onnxopt.optimizer.quantization.quantizer.Quantizer.quantize`).
        bit_widths: Integer weight/bias initializer name -> effective bits (the spec width).
        notes: Other facts worth reporting (opset raised, data_out moved past a Relu...).
        target_cpu: The CPU class the weight representation was chosen for.
        float_nodes: Every node left in float, with the reason.
    """

    quantized: tuple[str, ...]
    skipped: Mapping[str, str]
    labels: tuple[HonestLabel, ...]
    bit_widths: Mapping[str, int]
    notes: tuple[str, ...]
    target_cpu: str
    float_nodes: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (for ``--json`` output and trial attributes)."""
        return {
            "quantized": list(self.quantized),
            "skipped": dict(self.skipped),
            "labels": [dataclasses.asdict(label) for label in self.labels],
            "bit_widths": dict(self.bit_widths),
            "notes": list(self.notes),
            "target_cpu": self.target_cpu,
            "float_nodes": dict(self.float_nodes),
        }


@dataclasses.dataclass
class QuantizationPassResult(ir.passes.PassResult):
    """A :class:`PassResult` carrying the pass's report."""

    report: QuantizationReport


@dataclasses.dataclass(frozen=True)
class QuantizationResult(QuantizationReport):
    """The quantized model, the opset it uses, and the report of :func:`quantize_model`."""

    model: onnx.ModelProto
    opset: int


def coerce_storage(storage: Storage | str) -> Storage:
    """``storage`` as a :class:`Storage`, ConfigError for unknown values."""
    try:
        return Storage(storage)
    except ValueError:
        valid = [s.value for s in Storage]
        raise ConfigError(
            f"storage: unknown value {storage!r}; {did_you_mean(str(storage), valid)}"
        ) from None


def required_opset(specs: Mapping[str, NodeQuantSpec], storage: Storage | str) -> int:
    """The lowest default-domain opset whose Q/DQ accept every container the specs imply."""
    storage = coerce_storage(storage)
    needed = 13
    for spec in specs.values():
        tensors = [(Role.WEIGHT, spec.weight)]
        if spec.data_in is not None:
            tensors.append((Role.ACTIVATION, spec.data_in))
        if spec.data_out is not None:
            tensors.append((Role.ACTIVATION, spec.data_out))
        for role, t in tensors:
            container = t.container or choose_container(
                role, t.width, t.signed is not False, storage
            )
            needed = max(needed, container.min_opset)
    return needed


def _spec_nodes(graph: ir.Graph, specs: Mapping[str, NodeQuantSpec]) -> list[ir.Node]:
    by_name: dict[str, list[ir.Node]] = {}
    for node in graph:
        if node.name:
            by_name.setdefault(node.name, []).append(node)
    unknown = [name for name in specs if name not in by_name]
    if unknown:
        hints = "; ".join(f"unknown node {n!r}, {did_you_mean(n, by_name)}" for n in unknown)
        raise ConfigError(f"quantization specs name nodes not in the graph: {hints}")
    ambiguous = [name for name in specs if len(by_name[name]) > 1]
    if ambiguous:
        raise ConfigError(f"node names used by several nodes cannot be quantized: {ambiguous}")
    return [node for node in graph if node.name in specs]


class QDQPass(ir.passes.InPlacePass):
    """In-place pass inserting fixed-point Q/DQ for the nodes named in ``specs``.

    It edits the model it is given: callers that keep a pristine base pass an explicit
    ``model.clone()`` (:class:`~onnxopt.optimizer.quantization.quantizer.Quantizer` does).

    Args:
        specs: Node name -> its quantization spec.
        storage: ``container`` (narrow weights in int8) or ``packed`` (INT4/INT2).
        target_cpu: The CPU class to be exact on (:data:`onnxopt.runtime.cpu.CPU_CLASSES`,
            or ``"auto"`` for this machine's): where its u8s8 kernels saturate, signed 8-bit
            weights are stored as uint8 with zero point 128.
    """

    def __init__(
        self,
        specs: Mapping[str, NodeQuantSpec],
        storage: Storage | str = "container",
        target_cpu: str = AUTO,
    ):
        super().__init__()
        bad = [n for n, s in specs.items() if not isinstance(s, NodeQuantSpec)]
        if bad:
            raise ConfigError(f"specs for {bad} are not NodeQuantSpec instances")
        self.specs = dict(specs)
        self.storage = coerce_storage(storage)
        self.target = resolve_target(target_cpu)

    def requires(self, model: ir.Model) -> None:
        """The model's opset must have Q/DQ for every container the specs imply."""
        needed = required_opset(self.specs, self.storage)
        have = default_opset(model, missing=1)
        if have < needed:
            raise RewriteError(f"the specs need opset >= {needed}, the model has {have}")

    def call(self, model: ir.Model) -> QuantizationPassResult:
        """Quantize ``model`` in place."""
        graph = model.graph
        rewriter = NodeRewriter(graph, self.storage, self.target.u8s8_exact)
        skipped, resolved = {}, []
        for node in _spec_nodes(graph, self.specs):
            dynamic = self.specs[node.name or ""].activation is ActivationMode.DYNAMIC
            reason = unsupported_reason(node, dynamic)
            if reason is not None:
                skipped[node.name or ""] = reason
                continue
            resolved.append(rewriter.rewrite(node, self.specs[node.name or ""]))
        rewriter.remove_unread_outputs()
        rewriter.remove_replaced_constants()
        _record_bit_widths(model, rewriter.bit_widths)
        model.metadata_props[TARGET_CPU_KEY] = self.target.name
        notes = list(rewriter.notes)
        if rewriter.u8u8_nodes:
            notes.append(
                f"8-bit weights of {len(rewriter.u8u8_nodes)} node(s) stored as uint8 with zero "
                f"point 128 (u8u8 kernels): target CPU {self.target.name}'s u8s8 kernels "
                "saturate on full-range int8 weights"
            )
        report = QuantizationReport(
            quantized=tuple(r.name for r in resolved),
            skipped=skipped,
            labels=tuple(label for r in resolved for label in node_labels(r)),
            bit_widths=dict(rewriter.bit_widths),
            notes=tuple(notes),
            target_cpu=self.target.name,
            float_nodes={},
        )
        return QuantizationPassResult(model, modified=bool(resolved), report=report)


def _record_bit_widths(model: ir.Model, bit_widths: Mapping[str, int]) -> None:
    merged = json.loads(model.metadata_props.get(BIT_WIDTHS_KEY, "{}")) | dict(bit_widths)
    model.metadata_props[BIT_WIDTHS_KEY] = json.dumps(merged, sort_keys=True)


def raise_opset(proto: onnx.ModelProto, target: int) -> tuple[onnx.ModelProto, list[str]]:
    """``proto`` converted to opset ``target`` when it is older (a new proto), and the note."""
    have = default_opset(proto, missing=1)
    if have >= target:
        return proto, []
    try:
        converted = onnx.version_converter.convert_version(proto, target)
    except Exception as exc:  # the converter raises bare RuntimeErrors
        raise RewriteError(
            f"cannot convert the model from opset {have} to {target}: {first_line(exc)}"
        ) from exc
    return converted, [f"opset raised from {have} to {target} for the quantized types"]


def finish(
    result: QuantizationPassResult,
    notes: Sequence[str] = (),
    *,
    disabled: frozenset[str] = frozenset(),
    by_name: frozenset[str] = frozenset(),
) -> QuantizationResult:
    """The pass's model as a checked ``ModelProto`` with its report.

    Power-of-two scales and the few zero points repeat across layers and are stored once
    (scalars only, so no weight disappears behind the bit-width metadata's names); the
    model passes ``onnx.checker``'s full check with strict shape inference.

    Raises:
        RewriteError: When the quantized model does not validate.
    """
    report = result.report
    floats = float_nodes(result.model.graph, report.skipped, disabled, by_name)
    DeduplicateInitializersPass(size_limit=1)(result.model)
    proto = ir.to_proto(result.model)
    del proto.graph.value_info[:]  # intermediate shapes: onnxruntime infers them again
    min_ir = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    proto.ir_version = max(proto.ir_version, min_ir)
    try:
        check_full(proto)
    except CHECK_ERRORS as exc:
        raise RewriteError(f"the quantized model does not validate: {exc}") from exc
    fields = {f.name: getattr(report, f.name) for f in dataclasses.fields(QuantizationReport)}
    fields["notes"] = (*notes, *fields["notes"])
    fields["float_nodes"] = floats
    return QuantizationResult(**fields, model=proto, opset=default_opset(proto))


def quantize_model(
    model: onnx.ModelProto,
    specs: Mapping[str, NodeQuantSpec],
    *,
    storage: Storage | str = "container",
    opset: int = DEFAULT_OPSET,
    target_cpu: str = AUTO,
) -> QuantizationResult:
    """Quantize a copy of ``model`` to fixed point with Q/DQ nodes.

    Args:
        model: The float model; never modified.
        specs: Node name -> spec. Unknown names raise ConfigError with the closest names;
            nodes of unsupported op types are listed in ``skipped``.
        storage: ``container`` keeps narrow weights in 8-bit containers; ``packed`` stores
            weights of <= 4 bits as INT4 (<= 2 bits as INT2, which needs opset 25).
        opset: The minimum default-domain opset of the result; raised (with the onnx
            version converter) when the model or the packed types need more.
        target_cpu: The CPU class whose kernels must compute the model exactly
            (``"auto"``: this machine's), see :class:`QDQPass`.

    Returns:
        The quantized model (checked with ``onnx.checker`` full check) and the report.

    Raises:
        ConfigError: Unknown node names or specs that do not fit the model.
        RewriteError: The rewrite or the opset conversion failed.
    """
    storage = coerce_storage(storage)
    raised, notes = raise_opset(model, max(opset, required_opset(specs, storage)))
    # from_proto builds a new model: the caller's proto is never touched
    result = run_pass(QDQPass(specs, storage, target_cpu), ir.from_proto(raised))
    assert isinstance(result, QuantizationPassResult)
    return finish(result, notes)
