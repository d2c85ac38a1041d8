"""torch -> ONNX for modules with several named inputs (token ids and a mask), checked
against torch on sample rows at batch sizes 1 and 7 before the file is written.

The TorchScript exporter is used: it traces the transformer layers of the bundled encoder
in about a second, where the dynamo exporter takes much longer. The graph is prepared like
every export (:func:`~onnxopt.exporters.prepare.prepare_model`: constants folded).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from onnxopt.errors import ExportError
from onnxopt.exporters.diagnostics import quiet, root_cause
from onnxopt.exporters.opsets import DEFAULT_OPSET, check_opset
from onnxopt.exporters.prepare import prepare_model
from onnxopt.exporters.torch_onnx import ATOL, CHECK_BATCH_SIZES, RTOL, TORCHSCRIPT_MAX_OPSET
from onnxopt.model_io import save_onnx
from onnxopt.runtime.ort import make_session, quiet_run_options


def _torch(module: nn.Module, sample: Mapping[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in sample.values())).numpy()


def export_named(
    module: nn.Module,
    sample: Mapping[str, np.ndarray],
    path: Path,
    *,
    output_name: str = "output",
    opset: int = DEFAULT_OPSET,
) -> onnx.ModelProto:
    """Export ``module(*sample.values())`` with one dynamic batch axis per input and check it.

    Args:
        module: The module; its forward takes the inputs in ``sample``'s order.
        sample: Input name -> rows (at least 7) that the export traces and is checked on.
        path: Where the ONNX file goes.
        output_name: The output's name.

    Raises:
        ExportError: The exporter fails, or onnxruntime disagrees with torch.
    """
    check_opset(opset)
    module = module.eval()
    names = list(sample)
    traced = {k: torch.from_numpy(v[:4]) for k, v in sample.items()}
    axes = {name: {0: "batch"} for name in [*names, output_name]}
    buffer = io.BytesIO()
    try:
        with quiet(True):
            # torch annotates f as a path, but the TorchScript exporter writes to any file-like
            # object (torch passes it on with the same ignore)
            torch.onnx.export(
                module, tuple(traced.values()),
                buffer,  # type: ignore[arg-type]
                dynamo=False, input_names=names, output_names=[output_name], dynamic_axes=axes,
                opset_version=min(opset, TORCHSCRIPT_MAX_OPSET),
            )  # fmt: skip
    except Exception as exc:  # the exporter raises many types
        raise ExportError(f"the TorchScript exporter failed ({root_cause(exc)})") from None
    proto = onnx.load_from_string(buffer.getvalue())
    if opset > TORCHSCRIPT_MAX_OPSET:
        proto = onnx.version_converter.convert_version(proto, opset)
    model = prepare_model(proto).model
    onnx.checker.check_model(model, full_check=True)
    session = make_session(model, error=ExportError)
    for batch in CHECK_BATCH_SIZES:
        rows = {k: v[-batch:] for k, v in sample.items()}
        got = session.run(None, rows, quiet_run_options())[0]
        expected = _torch(module, rows)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else None
            raise ExportError(
                f"batch {batch}: onnxruntime differs from torch (largest difference {worst}); "
                "the export is not faithful"
            )
    save_onnx(model, path)
    return model
