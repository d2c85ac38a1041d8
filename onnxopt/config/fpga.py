"""hls4ml project options: the ``--reuse-factor/--strategy/--io-type/--part`` of
``onnxopt export --format hls4ml`` and the ``[search.export.hls4ml]`` table.

TOML shape::

    [search.export]
    formats = ["onnx", "ort", "qonnx", "hls4ml"]
    [search.export.hls4ml]
    reuse_factor = 1          # multiplications per multiplier (1: fully parallel)
    strategy = "latency"      # or "resource"
    io_type = "io_parallel"   # or "io_stream"
    backend = "vitis"         # or "vivado"
    part = "xcvu13p-flga2577-2-e"
    clock_period = 5          # ns
    verify = false            # compile each project with g++ and compare with onnxruntime
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from onnxopt.config.base import StrictModel

ExportFormat = Literal["onnx", "ort", "qonnx", "hls4ml"]
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "ort", "qonnx", "hls4ml")
DEFAULT_PART = "xcvu13p-flga2577-2-e"
"""hls4ml's default part for the Vitis and Vivado backends."""


class Hls4mlOptions(StrictModel):
    """How the hls4ml project is configured (model-wide; per-layer types come from the model)."""

    reuse_factor: int = Field(1, ge=1, le=4096)
    strategy: Literal["latency", "resource"] = "latency"
    io_type: Literal["io_parallel", "io_stream"] = "io_parallel"
    backend: Literal["vitis", "vivado"] = "vitis"
    part: str = DEFAULT_PART
    clock_period: float = Field(5.0, gt=0)
    verify: bool = False
    """Compile every project and compare it with onnxruntime (about 10 s each)."""
