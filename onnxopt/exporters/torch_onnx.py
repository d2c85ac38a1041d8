"""torch -> ONNX export, accepted only after onnxruntime agrees with torch.

The dynamo exporter (``torch.onnx.export(dynamo=True)``) is tried first; if it raises, the
TorchScript exporter is used and the reason is recorded. The graph is then prepared
(BatchNorm folded where exact), and the result is run in onnxruntime at two batch sizes
and compared with the torch module within ``rtol``/``atol`` before it is written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from onnxopt.errors import ExportError, UsageError
from onnxopt.exporters.prepare import prepare_model
from onnxopt.model_io import save_onnx

DEFAULT_OPSET = 21  # the newest opset whose QDQ kernels onnxruntime 1.32's CPU provider fuses
RTOL = 1e-4
ATOL = 1e-5
CHECK_BATCH_SIZES = (1, 7)
EMBED_LIMIT_BYTES = 1 << 30  # protobuf caps a file at 2 GB; larger models use external data


@dataclass(frozen=True)
class ExportResult:
    """What the export did and how closely onnxruntime matched torch."""

    path: Path
    exporter: str
    fallback_reason: str | None
    opset: int
    max_abs_diff: float
    batch_sizes_checked: tuple[int, ...]
    batchnorms_folded: int
    batchnorms_left: int
    external_data: bool


def _dynamo_export(module, sample, opset, input_name, output_name) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        module, (sample,), dynamo=True, opset_version=opset, external_data=False,
        dynamic_shapes=({0: batch},), input_names=[input_name], output_names=[output_name],
        verbose=False,
    )  # fmt: skip
    return program.model_proto


TORCHSCRIPT_MAX_OPSET = 20  # the TorchScript exporter stops at 20; newer opsets are converted


def _torchscript_export(module, sample, opset, input_name, output_name) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(
        module, (sample,), buffer, dynamo=False, opset_version=min(opset, TORCHSCRIPT_MAX_OPSET),
        input_names=[input_name], output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
    )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    if opset > TORCHSCRIPT_MAX_OPSET:
        proto = onnx.version_converter.convert_version(proto, opset)
    return proto


@contextlib.contextmanager
def _quiet():
    """The exporters print progress and warnings of their own; keep the CLI output ours."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _export_graph(module, sample, opset, input_name, output_name):
    try:
        with _quiet():
            return _dynamo_export(module, sample, opset, input_name, output_name), "dynamo", None
    except Exception as exc:  # the exporter raises many types; we fall back on any of them
        reason = _first_line(exc)
    try:
        with _quiet():
            proto = _torchscript_export(module, sample, opset, input_name, output_name)
    except Exception as exc:
        raise ExportError(
            f"both exporters failed: dynamo ({reason}); torchscript ({_first_line(exc)})"
        ) from None
    return proto, "torchscript", reason


def check_parity(
    module: nn.Module,
    model: onnx.ModelProto,
    input_shape: tuple[int, ...],
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    batch_sizes: tuple[int, ...] = CHECK_BATCH_SIZES,
    seed: int = 0,
) -> float:
    """Run torch and onnxruntime on random inputs at several batch sizes; raise if they differ.

    Returns:
        The largest absolute difference seen.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise ExportError(
            f"onnxruntime cannot load the exported model ({_first_line(exc)})"
        ) from None
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in batch_sizes:
        x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        got = session.run(None, {name: x})[0]
        if got.shape != expected.shape:
            raise ExportError(
                f"batch {batch}: onnxruntime output shape {got.shape} != torch "
                f"{expected.shape}; the batch axis is not dynamic"
            )
        worst = max(worst, float(np.max(np.abs(got - expected))) if got.size else 0.0)
        if not np.allclose(got, expected, rtol=rtol, atol=atol):
            raise ExportError(
                f"batch {batch}: onnxruntime differs from torch by up to {worst:.3g} "
                f"(tolerance rtol={rtol}, atol={atol}); the export is not faithful"
            )
    return worst


def export_module(
    module: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    input_name: str = "x",
    output_name: str = "logits",
) -> ExportResult:
    """Export a torch module to ONNX, fold BatchNorm, check it against torch and write it."""
    if not 18 <= opset <= onnx.defs.onnx_opset_version():
        raise UsageError(
            f"opset {opset} is not supported; use 18..{onnx.defs.onnx_opset_version()}"
            f" (default {DEFAULT_OPSET}, the newest with fused QDQ kernels)"
        )
    module = module.eval()
    sample = torch.from_numpy(
        np.random.default_rng(0).standard_normal((4, *input_shape)).astype(np.float32)
    )
    proto, exporter, reason = _export_graph(module, sample, opset, input_name, output_name)
    prepared = prepare_model(proto)
    model = prepared.model
    in_torch = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported model is invalid ({_first_line(exc)})") from None
    worst = check_parity(module, model, input_shape)
    external = model.ByteSize() > EMBED_LIMIT_BYTES
    save_onnx(model, path, external_data=external)
    return ExportResult(
        path=Path(path), exporter=exporter, fallback_reason=reason, opset=opset,
        max_abs_diff=worst, batch_sizes_checked=CHECK_BATCH_SIZES,
        batchnorms_folded=max(in_torch - prepared.batchnorms_left, 0),
        batchnorms_left=prepared.batchnorms_left,
        external_data=external,
    )  # fmt: skip
