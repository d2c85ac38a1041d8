"""The FPGA exports the CLI and the search call: a QONNX file, an hls4ml project.

Both take a fixed-point QDQ model onnxopt (or another tool) wrote and inputs to check on
(the model's data, or a fixed synthetic batch). Nothing is accepted unchecked: the QONNX
file is written only when qonnx's executor reproduces onnxruntime on the QDQ model exactly;
an hls4ml project with ``verify`` is compiled and its C++ emulation compared the same way.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from onnxopt.atomic import write_text
from onnxopt.config.fpga import Hls4mlOptions
from onnxopt.errors import ExportError, UsageError
from onnxopt.fpga.compare import Comparison, compare, model_inputs, reference_outputs
from onnxopt.fpga.extra import require
from onnxopt.fpga.hls_project import HlsProject, build_project, compile_project, predict
from onnxopt.fpga.qonnx_check import check_qonnx
from onnxopt.fpga.qonnx_convert import QonnxModel, to_qonnx
from onnxopt.fpga.resources import resource_proxy
from onnxopt.model_io import save_onnx
from onnxopt.optimizer.quantization.formats import FixedFormat

PRECISION_FILE = "precision.json"
SYNTHETIC_SAMPLES = 1000


@dataclasses.dataclass(frozen=True)
class QonnxExport:
    """A written QONNX file and the check it passed."""

    path: Path
    quant_nodes: int
    check: Comparison


@dataclasses.dataclass(frozen=True)
class HlsExport:
    """A written hls4ml project."""

    directory: Path
    precision_path: Path
    input_type: str
    layers: int
    convert_seconds: float
    compile_seconds: float | None
    verify: Comparison | None
    weight_bits: int


def synthetic_inputs(model: onnx.ModelProto, n: int = SYNTHETIC_SAMPLES) -> np.ndarray:
    """A fixed batch (seed 0) for models checked without data: standard normal values
    times 4, so the first quantizer both rounds and saturates."""
    from onnxopt.data.shaping import onnx_input_shape

    dims = onnx_input_shape(model)[1:]
    static = [d for d in dims if isinstance(d, int) and d > 0]
    if len(static) != len(dims):
        raise UsageError(f"the model input has dynamic dimensions {dims}; pass --data")
    return (np.random.default_rng(0).standard_normal((n, *static)) * 4).astype(np.float32)


def _qonnx(model: onnx.ModelProto) -> QonnxModel:
    require("qonnx", "the QONNX export")
    return to_qonnx(model)


def export_qonnx(model: onnx.ModelProto, output: Path, x: np.ndarray) -> QonnxExport:
    """Convert ``model`` to QONNX, check it on ``x`` with qonnx's executor against
    onnxruntime on ``model``, and write it only when every output is exact.

    Raises:
        UsageError: A float model or quantizers that are not fixed point; the extra missing.
        ExportError: The check found a difference (nothing is written).
    """
    qonnx = _qonnx(model)
    onnx.checker.check_model(qonnx.model)
    check = check_qonnx(qonnx.model, model, x)
    if not check.all_exact:
        raise ExportError(f"the QONNX model differs from onnxruntime: {check.summary()}")
    save_onnx(qonnx.model, Path(output))
    return QonnxExport(Path(output), len(qonnx.quant_nodes), check)


def _prepare_dir(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()):
        if not (directory / PRECISION_FILE).exists():
            raise UsageError(
                f"{directory} exists and is not an onnxopt hls4ml project; choose another -o "
                "or remove it"
            )
        shutil.rmtree(directory)


def _versions() -> dict[str, str]:
    out = {}
    for name in ("onnxopt", "hls4ml", "qonnx", "onnx", "onnxruntime"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _hls4ml_type(fmt: FixedFormat) -> str | None:
    """hls4ml's type for a per-tensor format (None per channel: one type per layer)."""
    if isinstance(fmt.frac, tuple):
        return None
    return f"{'' if fmt.signed else 'u'}fixed<{fmt.width},{fmt.width - fmt.frac}>"


def _format_rows(qonnx: QonnxModel) -> list[dict]:
    return [
        {
            "tensor": t.name,
            "role": str(t.role),
            "source": t.source,
            "format": t.fmt.label(),
            "width": t.fmt.width,
            "frac": t.fmt.frac,
            "signed": t.fmt.signed,
            "hls4ml": _hls4ml_type(t.fmt),
        }
        for t in qonnx.formats.values()
    ]


def precision_report(
    project: HlsProject, qonnx: QonnxModel, model: onnx.ModelProto, options: Hls4mlOptions
) -> dict:
    """What ``precision.json`` holds: the options, the model's formats, every hls4ml layer's
    types as hls4ml will build them, the resource proxies and the float layers."""
    floats = [row["hls4ml_layer"] for row in project.layers if "float" in row["types"].values()]
    return {
        "versions": _versions(),
        "options": options.model_dump(),
        "input": {"layer": project.graph.input_name, "type": project.input_type},
        "formats": _format_rows(qonnx),
        "layers": project.layers,
        "float_layers": floats,
        "float_note": (
            "these layers compute in float32 in the model (not quantized), so they do in the "
            "project too; on an FPGA that costs floating-point logic: quantize or fold them "
            "for a fixed-point design"
            if floats
            else None
        ),
        "resources": resource_proxy(model, options.reuse_factor),
        "synthesis": "not run: it needs the vendor tools (Vitis HLS / Vivado), which are not "
        "installed here; open the project with them to get resource and timing reports",
    }


def export_hls4ml(
    model: onnx.ModelProto,
    directory: Path,
    options: Hls4mlOptions,
    x: np.ndarray | None = None,
) -> HlsExport:
    """Write an hls4ml project for ``model`` into ``directory`` with ``precision.json``.

    With ``options.verify`` (``x`` needed) the project's C++ emulation is compiled with g++
    and its outputs on ``x`` compared with onnxruntime's on ``model``, exactly.

    Raises:
        UsageError: A float model, a node the export cannot take, a missing g++ or extra.
        ExportError: hls4ml failed, the compile failed, or the outputs differ.
    """
    directory = Path(directory)
    qonnx = _qonnx(model)
    _prepare_dir(directory)
    start = time.perf_counter()
    project = build_project(qonnx, directory, options)
    convert_seconds = time.perf_counter() - start
    report = precision_report(project, qonnx, model, options)
    compile_seconds, comparison = None, None
    if options.verify:
        assert x is not None, "verify needs inputs"
        start = time.perf_counter()
        compile_project(project)
        compile_seconds = time.perf_counter() - start
        got = predict(project, model_inputs(model, x))
        comparison = compare("hls4ml C++ emulation", got, reference_outputs(model, x))
        report["verify"] = comparison.as_dict()
    path = write_text(directory / PRECISION_FILE, json.dumps(report, indent=2) + "\n")
    if comparison is not None and not comparison.all_exact:
        raise ExportError(f"the hls4ml project differs from onnxruntime: {comparison.summary()}")
    return HlsExport(
        directory, path, project.input_type, len(project.layers), convert_seconds,
        compile_seconds, comparison, report["resources"]["weight_bits"],
    )  # fmt: skip
