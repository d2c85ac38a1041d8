"""Fit dataset features to a model input: reshape flat features, cast to the input dtype, and
check that a batch of them fits in memory."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from onnxopt.errors import DataError, UsageError

MAX_BATCH_BYTES = 1 << 30
"""Largest input batch built for a measurement: 1 GiB (65,536 JSC or digits rows are 4 and
16 MiB; 65,536 RGB 224 x 224 images would be 37 GiB)."""


def adapt_inputs(
    x: np.ndarray,
    input_shape: Sequence[int | str | None],
    *,
    dtype: np.dtype | type = np.float32,
    input_name: str = "input",
) -> np.ndarray:
    """Reshape features to a model input's shape and cast them to its dtype.

    Flat features ``(N, F)`` become ``(N, *input_shape[1:])`` when the product of the
    input's non-batch dimensions is ``F`` (digits ``(N, 64)`` -> ``(N, 1, 8, 8)``). When
    some non-batch dimension is symbolic, the features must already have the input's rank
    and agree on every static dimension.

    Args:
        x: Features, one row per sample (``(N, ...)``).
        input_shape: The model input shape; the first (batch) dimension is ignored.
        dtype: The input's float dtype (float32, float16 or float64).
        input_name: Input name, for error messages.

    Returns:
        A C-contiguous array of shape ``(N, *input_shape[1:])`` and dtype ``dtype``.

    Raises:
        DataError: When the features do not fit the input, or overflow a float16 input.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise DataError(f"features must have shape (samples, features), got {x.shape}")
    dims = list(input_shape)[1:]
    if all(isinstance(d, int) for d in dims):
        x = _reshape_static(x, dims, list(input_shape), input_name)
    else:
        _check_symbolic(x, dims, list(input_shape), input_name)
    with np.errstate(over="ignore"):  # float16 overflow is reported below as a DataError
        out = np.ascontiguousarray(x, dtype=dtype)
    if out.dtype == np.float16 and not np.isfinite(out).all():
        raise DataError(
            f"features exceed the float16 range of model input {input_name!r}; scale the data"
        )
    return out


def _reshape_static(x: np.ndarray, dims: list, shape: list, name: str) -> np.ndarray:
    features = int(np.prod(x.shape[1:]))
    expected = int(np.prod(dims))
    if features != expected:
        raise DataError(
            f"dataset has {features} features per sample but model input {name!r} expects "
            f"{expected} (shape {shape}); use data that matches the model"
        )
    return x.reshape((len(x), *dims))


def _check_symbolic(x: np.ndarray, dims: list, shape: list, name: str) -> None:
    # Symbolic sizes take the data's sizes, so the data must carry them: flat features
    # cannot say how they split into the symbolic dimensions.
    sample = x.shape[1:]
    fits = len(sample) == len(dims) and all(
        not isinstance(d, int) or d == s for d, s in zip(dims, sample, strict=True)
    )
    if not fits:
        symbolic = ", ".join(
            f"{d or '?'!r} (axis {i})" for i, d in enumerate(dims, 1) if not isinstance(d, int)
        )
        raise DataError(
            f"dataset samples have shape {list(sample)} but model input {name!r} has shape "
            f"{shape} with symbolic dimensions {symbolic}; give data shaped like the model "
            "input, or re-export the model with static dimensions"
        )


def onnx_input_shape(model) -> list[int | str | None]:
    """The first graph input's shape of an ``onnx.ModelProto`` (symbolic dims as names)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]


def check_batch_bytes(sample: np.ndarray, batch_size: int, *, available: int | None = None) -> int:
    """Refuse a batch of ``batch_size`` rows shaped like ``sample`` that would not fit.

    Batch sizes are bounded at load (:data:`onnxopt.config.bounds.MAX_BATCH_SIZE`), but what a
    batch costs depends on the data. The input batch alone must fit in :data:`MAX_BATCH_BYTES`
    and in half the memory available now (onnxruntime needs room for activations too).

    Args:
        sample: Model-ready rows (``(N, ...)``); only their shape and dtype matter.
        batch_size: Rows in the batch about to be built.
        available: Free memory in bytes (default: psutil's available memory).

    Returns:
        The batch's size in bytes.

    Raises:
        UsageError: Naming the batch size, its bytes and the largest batch size that fits.
    """
    row = int(np.prod(sample.shape[1:], dtype=np.int64)) * sample.dtype.itemsize
    need = row * int(batch_size)
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    limit = min(MAX_BATCH_BYTES, available // 2)
    if need > limit:
        raise UsageError(
            f"batch size {batch_size:,} of samples shaped {list(sample.shape[1:])} "
            f"({sample.dtype}) needs {need / 2**30:.1f} GiB for its input alone, over the "
            f"{limit / 2**30:.1f} GiB a batch may take here; use a batch size <= {limit // row:,}"
        )
    return need
