"""Fixed-point QDQ quantization: specs (what), the QDQ pass (how), numpy reference math."""

from onnxopt.optimizer.quantization.fixed_point import (
    frac_for_range,
    int_range,
    na_frac,
    quantize_fixed,
)
from onnxopt.optimizer.quantization.labels import HonestLabel
from onnxopt.optimizer.quantization.qdq_pass import (
    BIT_WIDTHS_KEY,
    QDQPass,
    QuantizationPassResult,
    QuantizationReport,
    QuantizationResult,
    quantize_model,
    required_opset,
)
from onnxopt.optimizer.quantization.spec import (
    Container,
    Granularity,
    NodeQuantSpec,
    Role,
    Storage,
    TensorSpec,
    choose_container,
)

__all__ = [
    "BIT_WIDTHS_KEY",
    "Container",
    "Granularity",
    "HonestLabel",
    "NodeQuantSpec",
    "QDQPass",
    "QuantizationPassResult",
    "QuantizationReport",
    "QuantizationResult",
    "Role",
    "Storage",
    "TensorSpec",
    "choose_container",
    "frac_for_range",
    "int_range",
    "na_frac",
    "quantize_fixed",
    "quantize_model",
    "required_opset",
]
