"""An hls4ml project from a QONNX model, every layer typed from the model's formats.

hls4ml's own config (``config_from_onnx_model``), converter and writer build the project;
onnxopt only fills in the per-layer precisions (:mod:`.precision`) and the model-wide
options. Two hls4ml defaults are overridden on purpose: the per-layer ``ReuseFactor: 1`` that
``config_from_onnx_model`` writes (it would override the model-wide value) and the input type
``fixed<16,6>`` (the input is converted to the model's first quantizer's format, rounding
half to even and saturating, as onnxruntime's QuantizeLinear does; float when the model
computes in float before its first quantizer).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from onnxopt.config.fpga import Hls4mlOptions
from onnxopt.errors import ExportError, UsageError
from onnxopt.fpga.extra import require
from onnxopt.fpga.hls_graph import HlsGraph, hls_graph, unsupported
from onnxopt.fpga.precision import FLOAT, Fixed, TensorType, tensor_types
from onnxopt.fpga.qonnx_convert import QonnxModel

PROJECT_NAME = "myproject"
BACKENDS = {"vitis": "Vitis", "vivado": "Vivado"}


@dataclasses.dataclass
class HlsProject:
    """A written hls4ml project.

    Attributes:
        directory: The project folder (hls4ml's writer output).
        hls_model: The hls4ml ``ModelGraph`` (for compile and predict).
        graph: The graph hls4ml read, with its names.
        layers: One row per hls4ml layer: its name, class, the QDQ node it comes from and
            the types hls4ml will use (read back from the model, not from our config).
        input_type: The input layer's type.
    """

    directory: Path
    hls_model: Any
    graph: HlsGraph
    layers: list[dict]
    input_type: str


def _type(t: TensorType, quantizer: bool = False) -> str:
    return FLOAT if t == FLOAT else t.hls(quantizer) if isinstance(t, Fixed) else str(t)


def refuse_unsupported(qonnx: QonnxModel) -> None:
    """UsageError naming the first node the export cannot take (and how many others)."""
    reasons = unsupported(qonnx.model)
    if reasons:
        (node, why), more = next(iter(reasons.items())), len(reasons) - 1
        tail = f" (and {more} more node(s))" if more else ""
        raise UsageError(f"node {node!r}: {why}{tail}")


def _layer_precisions(graph: HlsGraph, types: dict[str, TensorType]) -> dict[str, dict]:
    """hls4ml ``LayerName`` precision entries for every node we type."""
    out: dict[str, dict] = {graph.input_name: {"result": _type(types[graph.input_name], True)}}
    for node in graph.model.graph.node:
        t = _type(types[node.output[0]])
        if node.op_type == "MatMul":
            out[node.name] = {"accum": t, "result": t}
        elif node.op_type == "Add":
            out[node.name] = {"result": t}
        elif node.op_type in ("Relu", "Flatten", "Reshape"):
            out[node.name] = {"result": t}
        elif node.op_type == "BatchNormalization":
            out[node.name] = {"scale": FLOAT, "bias": FLOAT, "result": FLOAT}
    return out


def hls_config(hls4ml, graph: HlsGraph, types, options: Hls4mlOptions) -> dict:
    """hls4ml's config for the graph, with our precisions and options filled in."""
    with contextlib.redirect_stdout(io.StringIO()):
        config = hls4ml.utils.config.config_from_onnx_model(
            graph.model,
            granularity="name",
            backend=BACKENDS[options.backend],
            default_precision="fixed<16,6>",
            default_reuse_factor=options.reuse_factor,
        )
    config["Model"]["ReuseFactor"] = options.reuse_factor
    config["Model"]["Strategy"] = options.strategy.capitalize()
    layers = config.setdefault("LayerName", {})
    for name, precision in _layer_precisions(graph, types).items():
        entry = layers.setdefault(name, {})
        entry["Precision"] = {**entry.get("Precision", {}), **precision}
        # the bias Add becomes an ApplyAlpha layer named after it
        if name in {n.name for n in graph.model.graph.node if n.op_type == "Add"}:
            layers[f"bn_{name}"] = {"Precision": dict(precision)}
    for entry in layers.values():
        entry["ReuseFactor"] = options.reuse_factor
    return config


def _origin(layer_name: str, name_map: dict[str, str]) -> str | None:
    for candidate in (
        layer_name,
        layer_name.removeprefix("Dense_"),
        layer_name.removeprefix("bn_"),
        layer_name.removesuffix("_act"),
    ):
        if candidate in name_map:
            return name_map[candidate] or None
    return None


def _layer_rows(hls_model, graph: HlsGraph) -> list[dict]:
    rows = []
    for layer in hls_model.get_layers():
        types = {k.removesuffix("_t"): str(v.precision) for k, v in layer.types.items()}
        types = {k: v for k, v in types.items() if k not in ("table", "index", "scale_precision")}
        if layer.class_name == "Dense" and not layer.get_attr("use_bias", True):
            types.pop("bias", None)  # all zeros, unused: the bias is the ApplyAlpha after it
        rows.append(
            {
                "hls4ml_layer": layer.name,
                "class": layer.class_name,
                "onnx_node": _origin(layer.name, graph.name_map),
                "types": types,
                "reuse_factor": layer.get_attr("reuse_factor"),
                "strategy": layer.get_attr("strategy"),
            }
        )
    return rows


def build_project(qonnx: QonnxModel, directory: Path, options: Hls4mlOptions) -> HlsProject:
    """Convert ``qonnx`` with hls4ml and write the project into ``directory``.

    Raises:
        UsageError: A node the export cannot take, or the fpga extra missing.
        ExportError: hls4ml's converter or writer failed.
    """
    refuse_unsupported(qonnx)
    hls4ml = require("hls4ml", "--format hls4ml")
    graph = hls_graph(qonnx.model)
    types = tensor_types(graph.model)
    config = hls_config(hls4ml, graph, types, options)
    directory = Path(directory)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            hls_model = hls4ml.converters.convert_from_onnx_model(
                graph.model,
                output_dir=str(directory),
                project_name=PROJECT_NAME,
                backend=BACKENDS[options.backend],
                part=options.part,
                io_type=options.io_type,
                clock_period=options.clock_period,
                hls_config=config,
            )
            hls_model.write()
    except (Exception, SystemExit) as exc:  # hls4ml raises bare Exceptions
        raise ExportError(f"hls4ml could not convert the model: {_first_line(exc)}") from exc
    input_type = _type(types[graph.input_name], True)
    return HlsProject(directory, hls_model, graph, _layer_rows(hls_model, graph), input_type)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _compiler_error(log: str) -> str:
    for line in log.splitlines():
        if "error" in line.lower():
            return line.strip()
    lines = [line for line in log.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no compiler output"


def require_compiler() -> str:
    """The g++ the emulation is built with; UsageError (exit 2) when it is missing."""
    compiler = shutil.which("g++")
    if compiler is None:
        raise UsageError(
            "g++ is not installed, and hls4ml builds its C++ emulation with it; install it "
            "(Debian/Ubuntu: apt-get install g++) or export without --verify"
        )
    return compiler


def compile_project(project: HlsProject) -> None:
    """Compile the project's C++ emulation (hls4ml's ``build_lib.sh``, g++).

    Raises:
        UsageError: No g++ on the PATH.
        ExportError: The compile failed (with the compiler's first error line).
    """
    require_compiler()
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log):
            warnings.simplefilter("ignore")
            project.hls_model.compile()
    except Exception as exc:
        raise ExportError(
            f"the hls4ml project in {project.directory} failed to compile: "
            f"{_compiler_error(log.getvalue()) if log.getvalue() else _first_line(exc)}"
        ) from exc


def predict(project: HlsProject, x: np.ndarray) -> np.ndarray:
    """The compiled emulation's outputs for the float32 batch ``x``."""
    with contextlib.redirect_stdout(io.StringIO()):
        out = project.hls_model.predict(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(out)
