"""Honest labels: which quantized widths buy no storage or speed in onnxruntime.

A width narrower than its container is simulated: a 3-bit weight in an int8 container
takes 8 bits on disk and runs the 8-bit kernel. :func:`kernel_blockers` explains, from a
node's resolved formats, why onnxruntime may not fuse it (16-bit containers, a float bias,
a Conv without an 8-bit output). Whether it does fuse is not guessed here: it is read from
onnxruntime's optimized graph (:func:`onnxopt.runtime.kernels.kernel_facts`), and
:func:`agree_with` makes the labels agree with those facts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from onnxopt.optimizer.quantization.qdq_nodes import ActivationQuant
from onnxopt.optimizer.quantization.spec import ActivationMode, Container

CONV_NEEDS_OUTPUT_Q = "Conv without an 8-bit data_out: QLinearConv needs a quantized output"
NOT_FUSED = "onnxruntime does not fuse it into an integer kernel: it runs DQ + float {op}"
WEIGHT_ONLY = (
    "weight-only: the table is stored as integers and the lookup reads codes, dequantized "
    "after it (no integer kernel; the table's memory and file size shrink)"
)

@dataclasses.dataclass(frozen=True)
class HonestLabel:
    """One tensor (or a node's kernel) whose nominal width gains nothing in onnxruntime.

    Attributes:
        node: The node name.
        tensor: ``data_in``, ``weight``, ``bias``, ``data_out`` or ``kernel``.
        width: The spec width (None for ``kernel`` labels).
        container: The storage type (None for ``kernel`` labels).
        reason: One line for reports.
    """

    node: str
    tensor: str
    width: int | None
    container: str | None
    reason: str


@dataclasses.dataclass(frozen=True)
class ResolvedNode:
    """The resolved quantization of one node, as the pass emitted it."""

    name: str
    op_type: str
    data_in: ActivationQuant | None
    """None for dynamic activations (quantized at run time) and weight-only nodes."""
    weight_width: int
    weight_container: Container
    bias_width: int | None
    float_bias: bool
    data_out: ActivationQuant | None
    activation: ActivationMode = ActivationMode.STATIC


def _storage_label(node: str, tensor: str, width: int, container: Container) -> HonestLabel | None:
    if width >= container.bits:
        return None
    reason = (
        f"{width}-bit values stored in {container} take {container.bits} bits each: "
        f"no storage or speed gain over {container.bits}-bit"
    )
    return HonestLabel(node, tensor, width, str(container), reason)


def kernel_blockers(node: ResolvedNode) -> list[str]:
    """Why onnxruntime will not fuse the node into an integer kernel (empty when it will)."""
    op = node.op_type
    if node.activation is ActivationMode.WEIGHT_ONLY:
        return [WEIGHT_ONLY]
    if node.activation is ActivationMode.DYNAMIC:
        return []  # 8-bit weights (the spec checks) and DynamicQuantizeLinear always fuse
    assert node.data_in is not None
    blockers = []
    if node.data_in.container.bits != 8:
        blockers.append(f"16-bit activations: no integer {op} kernel, runs DQ + float {op}")
    if node.weight_container.bits == 16:
        blockers.append(f"16-bit weights: no integer {op} kernel, runs DQ + float {op}")
    if node.float_bias:
        blockers.append("float bias: only an int32 DequantizeLinear bias fuses")
    if op == "Conv" and (node.data_out is None or node.data_out.container.bits != 8):
        blockers.append(CONV_NEEDS_OUTPUT_Q)
    return blockers


def node_labels(node: ResolvedNode) -> list[HonestLabel]:
    """All honest labels of one quantized node."""
    candidates = [_storage_label(node.name, "weight", node.weight_width, node.weight_container)]
    if node.data_in is not None:
        candidates.append(
            _storage_label(node.name, "data_in", node.data_in.width, node.data_in.container)
        )
    if node.data_out is not None:
        candidates.append(
            _storage_label(node.name, "data_out", node.data_out.width, node.data_out.container)
        )
    if node.bias_width is not None:
        reason = (
            "stored as int32 at the accumulator scale 2**-(f_in + f_w): the width only sets "
            "the rounding grid, no storage or speed gain"
        )
        candidates.append(HonestLabel(node.name, "bias", node.bias_width, "int32", reason))
    labels = [label for label in candidates if label is not None]
    labels += [HonestLabel(node.name, "kernel", None, None, b) for b in kernel_blockers(node)]
    return labels


def agree_with(
    labels: tuple[HonestLabel, ...],
    kernels: Mapping[str, str | None],
    op_types: Mapping[str, str],
) -> tuple[HonestLabel, ...]:
    """Labels rewritten to agree with ``kernels`` (node -> the integer kernel onnxruntime
    runs, None: float): a node that fuses loses its kernel labels; one that does not gets one
    when it had none."""
    fused = {name for name, kernel in kernels.items() if kernel is not None}
    out = [lbl for lbl in labels if not (lbl.tensor == "kernel" and lbl.node in fused)]
    explained = {lbl.node for lbl in out if lbl.tensor == "kernel"}
    for name, kernel in kernels.items():
        if kernel is None and name not in explained:
            reason = NOT_FUSED.format(op=op_types.get(name, "op"))
            out.append(HonestLabel(name, "kernel", None, None, reason))
    return tuple(out)
