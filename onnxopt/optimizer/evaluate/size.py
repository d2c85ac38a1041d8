"""Model size on disk, and parameter count and effective bit width of the weights.

Parameters are the floating-point initializers (and ``Constant`` values) a node consumes
as data, plus integer tensors that are quantized weights (input 0 of a DequantizeLinear, or
the weight/bias inputs of QLinear and *Integer ops). Scales, zero points, clip bounds and
shape-like integer tensors are not parameters. A tensor's bits per element are its storage
type's, unless the model's ``onnxopt.bit_widths`` metadata (written by the quantizer, e.g.
3-bit values in an int8 container) says otherwise.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnx
from onnx import TensorProto

from onnxopt.errors import ModelLoadError
from onnxopt.model_io import load_onnx
from onnxopt.optimizer.quantization.metadata import BIT_WIDTHS_KEY, metadata_value

_BITS_BY_TYPE_NAME = {
    "FLOAT": 32, "FLOAT16": 16, "BFLOAT16": 16, "DOUBLE": 64,
    "FLOAT8E4M3FN": 8, "FLOAT8E4M3FNUZ": 8, "FLOAT8E5M2": 8, "FLOAT8E5M2FNUZ": 8,
    "FLOAT8E8M0": 8, "FLOAT6E2M3": 6, "FLOAT6E3M2": 6, "FLOAT4E2M1": 4,
    "INT2": 2, "UINT2": 2, "INT4": 4, "UINT4": 4, "INT8": 8, "UINT8": 8,
    "INT16": 16, "UINT16": 16, "INT32": 32, "UINT32": 32, "INT64": 64, "UINT64": 64,
}  # fmt: skip
# Newer onnx releases add types; only the ones this onnx knows are mapped.
ELEMENT_BITS = {
    getattr(TensorProto, name): bits
    for name, bits in _BITS_BY_TYPE_NAME.items()
    if hasattr(TensorProto, name)
}
"""Storage bits per element, by TensorProto data type."""

_FLOAT_TYPE_NAMES = {name for name in _BITS_BY_TYPE_NAME if name.startswith(("FLOAT", "BFLOAT"))}
FLOAT_TYPES = frozenset(
    getattr(TensorProto, n) for n in _FLOAT_TYPE_NAMES | {"DOUBLE"} if hasattr(TensorProto, n)
)

# (op_type, input index) uses that do not make a floating-point tensor a parameter.
NON_PARAMETER_INPUTS = frozenset({
    ("QuantizeLinear", 1), ("QuantizeLinear", 2), ("DequantizeLinear", 1), ("DequantizeLinear", 2),
    ("Clip", 1), ("Clip", 2), ("Pad", 2), ("Resize", 1), ("Resize", 2), ("Upsample", 1),
})  # fmt: skip
# (op_type, input index) uses that make an integer tensor a (quantized) parameter.
INTEGER_WEIGHT_INPUTS = frozenset({
    ("DequantizeLinear", 0), ("QLinearConv", 3), ("QLinearConv", 8), ("QLinearMatMul", 0),
    ("QLinearMatMul", 3), ("ConvInteger", 1), ("MatMulInteger", 0), ("MatMulInteger", 1),
})  # fmt: skip
# quantized embedding tables: 8/16-bit codes looked up by a Gather (int64 ones index shapes)
TABLE_TYPES = frozenset({TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16,
                         TensorProto.UINT16})  # fmt: skip

# packed storage keeps INT4/INT2 weights on disk and casts them to 8 bits for the kernels
PACKED_TYPES = frozenset({TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.UINT2})

Source = Literal["initializer", "constant"]


@dataclass(frozen=True)
class TensorStat:
    """One parameter tensor: name, storage dtype, element count and effective bits."""

    name: str
    dtype: str
    elements: int
    bits: int
    container_bits: int
    source: Source

    def to_dict(self) -> dict[str, str | int]:
        """Plain JSON-able values."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "elements": self.elements,
            "bits": self.bits,
            "container_bits": self.container_bits,
            "source": self.source,
        }


@dataclass(frozen=True)
class ParameterStats:
    """Parameter count and bit-width summary of a model's weights.

    Attributes:
        parameters: Total parameter elements.
        average_bitwidth: Bits per parameter, weighted by element count.
        theoretical_size_bytes: Sum over parameters of bits / 8 (may be fractional).
        memory_density: 32 / average_bitwidth (how many times smaller than float32).
        tensors: One row per parameter tensor, in graph order.
    """

    parameters: int
    average_bitwidth: float
    theoretical_size_bytes: float
    memory_density: float
    tensors: tuple[TensorStat, ...]


def size_on_disk(path: Path | str) -> int:
    """Bytes of a model file plus the external-data files it references.

    Only external files inside the model's directory count; each counts once.

    Raises:
        ModelLoadError: When the model or a referenced data file is missing or unreadable.
    """
    path = Path(os.fspath(path))
    model = load_graph(path)
    return path.stat().st_size + sum(f.stat().st_size for f in external_data_files(model, path))


def load_graph(path: Path | str) -> onnx.ModelProto:
    """Load a model's graph and metadata without its external data (see :mod:`onnxopt.model_io`).

    Raises:
        ModelLoadError: When the file is missing or is not an ONNX model.
    """
    return load_onnx(Path(os.fspath(path)), external_data=False)


def external_data_files(model: onnx.ModelProto, model_path: Path) -> list[Path]:
    """Distinct external-data files of ``model`` that live in ``model_path``'s directory.

    Raises:
        ModelLoadError: When a referenced file inside the directory does not exist.
    """
    base = model_path.parent.resolve()
    found: dict[Path, None] = {}
    for tensor in _all_tensors(model):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        file = (base / location).resolve()
        if not file.is_relative_to(base) or file == model_path.resolve():
            continue
        if not file.is_file():
            raise ModelLoadError(
                f"{model_path.name} stores {tensor.name!r} in {location!r}, which does not exist"
            )
        found[file] = None
    return list(found)


def parameter_stats(model: onnx.ModelProto) -> ParameterStats:
    """Count a model's parameters and their average effective bit width.

    Raises:
        ModelLoadError: When the model has no parameters or its bit-width metadata is invalid.
    """
    overrides = bit_width_overrides(model)
    rows = [_row(name, tensor, source, overrides) for name, tensor, source in _parameters(model)]
    unknown = sorted(set(overrides) - {r.name for r in rows})
    if unknown:
        raise ModelLoadError(
            f"metadata {BIT_WIDTHS_KEY} names {', '.join(map(repr, unknown))}, which "
            "are not parameters of the model"
        )
    if not rows:
        raise ModelLoadError("model has no parameters; bit width and memory density are undefined")
    count = sum(r.elements for r in rows)
    bits = sum(r.elements * r.bits for r in rows)
    average = bits / count
    return ParameterStats(
        parameters=count,
        average_bitwidth=average,
        theoretical_size_bytes=bits / 8,
        memory_density=32.0 / average,
        tensors=tuple(rows),
    )


def bit_width_overrides(model: onnx.ModelProto) -> dict[str, int]:
    """The ``onnxopt.bit_widths`` metadata as {tensor name: bits}; empty when absent.

    Raises:
        ModelLoadError: When the entry is not a JSON object of positive integers.
    """
    raw = metadata_value(model, BIT_WIDTHS_KEY)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"metadata {BIT_WIDTHS_KEY} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict) or not all(_is_bits(v) for v in value.values()):
        raise ModelLoadError(
            f"metadata {BIT_WIDTHS_KEY} must map tensor names to positive integer bit widths, "
            f"got {raw[:80]!r}"
        )
    return {str(k): int(v) for k, v in value.items()}


def _is_bits(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _row(name: str, tensor: TensorProto, source: Source, overrides: dict[str, int]) -> TensorStat:
    container = ELEMENT_BITS.get(tensor.data_type)
    if container is None:
        dtype = TensorProto.DataType.Name(tensor.data_type)
        raise ModelLoadError(f"parameter {name!r} has unsupported element type {dtype}")
    bits = overrides.get(name, container)
    if bits > container:
        raise ModelLoadError(
            f"metadata {BIT_WIDTHS_KEY} gives {name!r} {bits} bits but it is stored in "
            f"{container}-bit elements"
        )
    elements = 1
    for dim in tensor.dims:
        elements *= dim
    return TensorStat(name, _dtype_name(tensor.data_type), elements, bits, container, source)


def _dtype_name(data_type: int) -> str:
    names: dict[int, str] = {TensorProto.FLOAT: "float32", TensorProto.DOUBLE: "float64"}
    return names.get(data_type) or TensorProto.DataType.Name(data_type).lower()


def _parameters(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto, Source]]:
    uses: dict[str, set[tuple[str, int]]] = defaultdict(set)
    candidates: list[tuple[str, TensorProto, Source]] = []
    for graph in _graphs(model.graph):
        candidates.extend((t.name, t, "initializer") for t in graph.initializer)
        for node in graph.node:
            for index, name in enumerate(node.input):
                uses[name].add((node.op_type, index))
            value = _constant_value(node)
            if value is not None:
                candidates.append((node.output[0], value, "constant"))
    for name, tensor, source in candidates:
        if _is_parameter(tensor.data_type, uses.get(name, set())):
            yield name, tensor, source


def _is_parameter(data_type: int, uses: set[tuple[str, int]]) -> bool:
    if data_type in FLOAT_TYPES:
        return any(use not in NON_PARAMETER_INPUTS for use in uses)
    if data_type in PACKED_TYPES and ("Cast", 0) in uses:
        return True
    if data_type in TABLE_TYPES and ("Gather", 0) in uses:
        return True
    return any(use in INTEGER_WEIGHT_INPUTS for use in uses)


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
        return None
    return next((a.t for a in node.attribute if a.name == "value"), None)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _all_tensors(model: onnx.ModelProto) -> Iterator[TensorProto]:
    for graph in _graphs(model.graph):
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    yield from attr.tensors
