"""The opsets ``onnxopt export`` writes, the same for torch modules and ONNX files."""

from __future__ import annotations

import onnx

from onnxopt.errors import UsageError

DEFAULT_OPSET = 21  # the newest opset whose QDQ kernels onnxruntime 1.32's CPU provider fuses
MIN_OPSET = 18  # the dynamo exporter's oldest


def max_opset() -> int:
    """The newest opset the installed onnx knows."""
    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> None:
    """Refuse an opset outside ``MIN_OPSET..max_opset()``.

    Raises:
        UsageError: One line naming the opset and the valid range.
    """
    if not MIN_OPSET <= opset <= max_opset():
        raise UsageError(
            f"opset {opset} is not supported; use {MIN_OPSET}..{max_opset()}"
            f" (default {DEFAULT_OPSET}, the newest with fused QDQ kernels)"
        )
