"""torch -> ONNX export, accepted only after onnxruntime agrees with torch.

The dynamo exporter (``torch.onnx.export(dynamo=True)``) is tried first; if it raises, the
TorchScript exporter is used and the reason is recorded. The graph is then prepared
(BatchNorm folded where exact), and the result is run in onnxruntime at two batch sizes
and compared with the torch module within ``rtol``/``atol`` before it is written.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from onnxopt.errors import ExportError, UsageError
from onnxopt.exporters.diagnostics import quiet, root_cause, shorten
from onnxopt.exporters.opsets import DEFAULT_OPSET, check_opset
from onnxopt.exporters.prepare import prepare_model
from onnxopt.model_io import save_onnx
from onnxopt.runtime.ort import make_session, native_error, quiet_run_options

__all__ = ["ATOL", "DEFAULT_OPSET", "RTOL", "ExportResult", "check_parity", "export_module"]

RTOL = 1e-4
ATOL = 1e-5
CHECK_BATCH_SIZES = (1, 7)
EXPORT_BATCH = 4  # the sample the exporters trace; the checks use other batch sizes
BATCH_FIX = (
    "avoid int(x.shape[0]) / x.size(0) and fixed sizes in view/reshape, "
    "use flatten(1) or reshape(x.shape[0], -1)"
)
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
    assert program is not None, "torch.onnx.export(dynamo=True) returns its ONNXProgram"
    return program.model_proto


TORCHSCRIPT_MAX_OPSET = 20  # the TorchScript exporter stops at 20; newer opsets are converted


def _torchscript_export(module, sample, opset, input_name, output_name) -> onnx.ModelProto:
    buffer = io.BytesIO()
    # torch annotates f as a path, but the TorchScript exporter writes to any file-like object
    # (torch passes it on with the same ignore)
    torch.onnx.export(
        module, (sample,),
        buffer,  # type: ignore[arg-type]
        dynamo=False, opset_version=min(opset, TORCHSCRIPT_MAX_OPSET),
        input_names=[input_name], output_names=[output_name],
        dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
    )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    if opset > TORCHSCRIPT_MAX_OPSET:
        proto = onnx.version_converter.convert_version(proto, opset)
    return proto


def _export_graph(module, sample, opset, input_name, output_name, debug=False):
    try:
        with quiet(not debug):
            return _dynamo_export(module, sample, opset, input_name, output_name), "dynamo", None
    except Exception as exc:  # the exporter raises many types; we fall back on any of them
        reason = root_cause(exc)
    try:
        with quiet(not debug):
            proto = _torchscript_export(module, sample, opset, input_name, output_name)
    except Exception as exc:
        raise ExportError(
            f"both exporters failed: dynamo ({reason}); torchscript ({root_cause(exc)})"
        ) from (exc if debug else None)
    return proto, "torchscript", reason


def _run_torch(module: nn.Module, x: np.ndarray, what: str) -> np.ndarray:
    """The module's output on ``x``; ``what`` is the hint given when the module fails."""
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(x))
    except Exception as exc:  # the user's forward can raise anything
        raise UsageError(
            f"the model fails in torch on an input of shape {x.shape} ({root_cause(exc)}); {what}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise UsageError(
            f"the model returns {type(out).__name__}, not one tensor of class scores; "
            "return only the logits from forward()"
        )
    return out.numpy()


def _ort_reason(exc: BaseException) -> str:
    """onnxruntime's message without its error-code prefix and C++ assertion text."""
    text = re.sub(r"\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(exc))
    text = re.sub(r"Status Message: \S+:\d+ .*? was false\. ", "", text)  # C++ assertion
    return shorten(text)


def check_parity(
    module: nn.Module,
    model: onnx.ModelProto,
    input_shape: tuple[int, ...],
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    batch_sizes: tuple[int, ...] = CHECK_BATCH_SIZES,
    seed: int = 0,
    export_batch: int | None = None,
) -> float:
    """Run torch and onnxruntime on random inputs at several batch sizes; raise if they differ.

    Args:
        export_batch: The batch size the exporter traced, if known: when onnxruntime fails
            at another one, it is tried there to tell a graph with a fixed batch size apart.

    Returns:
        The largest absolute difference seen.

    Raises:
        UsageError: The torch module itself fails at one of the batch sizes.
        ExportError: onnxruntime cannot run the model, or its outputs differ from torch.
    """
    session = _session(model)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in batch_sizes:
        x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
        expected = _run_torch(module, x, f"it must accept any batch size: {BATCH_FIX}")
        got = _run_onnx(session, x, input_shape, export_batch)
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported graph does not keep the batch axis dynamic: at batch {batch} "
                f"onnxruntime returns shape {got.shape}, torch {expected.shape}; {BATCH_FIX}"
            )
        worst = max(worst, float(np.max(np.abs(got - expected))) if got.size else 0.0)
        if not np.allclose(got, expected, rtol=rtol, atol=atol):
            raise ExportError(
                f"batch {batch}: onnxruntime differs from torch by up to {worst:.3g} "
                f"(tolerance rtol={rtol}, atol={atol}); the export is not faithful"
            )
    return worst


def _session(model: onnx.ModelProto):
    try:
        return make_session(model, error=ExportError)
    except ExportError as exc:
        raise ExportError(
            f"onnxruntime cannot load the exported model ({_ort_reason(native_error(exc))})"
        ) from None


def _run_onnx(session, x: np.ndarray, input_shape, export_batch: int | None) -> np.ndarray:
    name = session.get_inputs()[0].name
    try:
        return session.run(None, {name: x}, quiet_run_options())[0]
    except Exception as exc:  # onnxruntime raises its own exception types
        reason = _ort_reason(exc)
    batch = x.shape[0]
    if export_batch is not None and export_batch != batch:
        probe = np.zeros((export_batch, *input_shape), dtype=np.float32)
        try:
            session.run(None, {name: probe}, quiet_run_options())
        except Exception:  # fails at the traced batch size too: not a batch-size problem
            pass
        else:
            raise ExportError(
                f"the exported graph fixes the batch size at {export_batch}: onnxruntime fails "
                f"at batch {batch} ({reason}); {BATCH_FIX}"
            )
    raise ExportError(f"onnxruntime cannot run the exported model at batch {batch} ({reason})")


def export_module(
    module: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    input_name: str = "x",
    output_name: str = "logits",
    debug: bool = False,
) -> ExportResult:
    """Export a torch module to ONNX, fold BatchNorm, check it against torch and write it.

    Args:
        debug: Let the exporters print their logs and warnings, and chain their exceptions.

    Raises:
        UsageError: A bad opset, or the module fails in torch on the example input.
        ExportError: Both exporters fail, or the exported graph disagrees with torch.
    """
    check_opset(opset)
    module = module.eval()
    sample = np.random.default_rng(0).standard_normal((EXPORT_BATCH, *input_shape))
    sample = sample.astype(np.float32)
    _run_torch(module, sample, f"is the per-sample input shape {tuple(input_shape)} right?")
    proto, exporter, reason = _export_graph(
        module, torch.from_numpy(sample), opset, input_name, output_name, debug
    )
    prepared = prepare_model(proto)
    model = prepared.model
    in_torch = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported model is invalid ({shorten(str(exc))})") from None
    worst = check_parity(module, model, input_shape, export_batch=EXPORT_BATCH)
    external = model.ByteSize() > EMBED_LIMIT_BYTES
    save_onnx(model, path, external_data=external)
    return ExportResult(
        path=Path(path), exporter=exporter, fallback_reason=reason, opset=opset,
        max_abs_diff=worst, batch_sizes_checked=CHECK_BATCH_SIZES,
        batchnorms_folded=max(in_torch - prepared.batchnorms_left, 0),
        batchnorms_left=prepared.batchnorms_left,
        external_data=external,
    )  # fmt: skip
