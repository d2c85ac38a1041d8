"""The metadata onnxopt writes into a quantized model, read back by evaluation and export.

``onnxopt.bit_widths`` maps integer weight/bias initializers to their true widths (a 3-bit
weight sits in an int8 container); ``onnxopt.target_cpu`` names the CPU class whose kernels
the weight representation was chosen for (:mod:`onnxopt.runtime.cpu`).
"""

from __future__ import annotations

import onnx

BIT_WIDTHS_KEY = "onnxopt.bit_widths"
"""metadata_props key holding a JSON object {tensor_name: effective_bits}."""
TARGET_CPU_KEY = "onnxopt.target_cpu"
"""metadata_props key: the CPU class the weights' representation was chosen for."""


def metadata_value(model: onnx.ModelProto, key: str) -> str | None:
    """The value of one metadata_props key, or None."""
    return next((p.value for p in model.metadata_props if p.key == key), None)
