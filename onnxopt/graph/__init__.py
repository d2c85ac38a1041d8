"""The onnx_ir helpers every stage shares: constants, attributes, ranks, opsets, fresh names.

Graph code works on :mod:`onnx_ir`; protobuf ``ModelProto`` appears only at the file boundary
(:mod:`onnxopt.model_io`) and the runtime boundary (:mod:`onnxopt.runtime`), converted with
:func:`to_ir` and :func:`to_proto`.
"""

from onnxopt.graph.core import (
    DEFAULT_DOMAINS,
    Namer,
    attr_value,
    const_array,
    const_input,
    default_opset,
    input_value,
    is_default_domain,
    rank_of,
    run_pass,
    to_ir,
    to_proto,
    value_name,
)

__all__ = [
    "DEFAULT_DOMAINS",
    "Namer",
    "attr_value",
    "const_array",
    "const_input",
    "default_opset",
    "input_value",
    "is_default_domain",
    "rank_of",
    "run_pass",
    "to_ir",
    "to_proto",
    "value_name",
]
