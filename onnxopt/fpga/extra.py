"""The optional ``fpga`` extra (hls4ml, qonnx): imported lazily, with one clear error."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from onnxopt.errors import UsageError

INSTALL_LINE = "pip install -e '.[fpga]'"
PACKAGES = {"qonnx": "qonnx", "hls4ml": "hls4ml"}


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (``qonnx...`` or ``hls4ml...``), or raise one UsageError (exit 2)
    naming the install line.

    Args:
        module: The module to import, e.g. ``"qonnx.core.onnx_exec"``.
        what: What needs it, for the message (e.g. ``"--format qonnx"``).
    """
    top = module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        raise UsageError(
            f"{what} needs the optional packages hls4ml and qonnx ({top} is not installed); "
            f"install them with: {INSTALL_LINE}"
        )
    return importlib.import_module(module)
