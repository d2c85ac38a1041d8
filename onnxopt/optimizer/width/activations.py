"""Intermediate activations on calibration data, read with onnxruntime.

The requested tensors are added as graph outputs of the model for the duration of one
serialization (the model itself is left as it was), and the session runs in batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxopt.errors import DataError, RewriteError
from onnxopt.runtime.ort import make_session, ort_errors, quiet_run_options

BATCH = 512
"""Samples per onnxruntime run: bounds the memory of the activations being read."""

Calibration = np.ndarray | Mapping[str, np.ndarray]


def model_feeds(model: ir.Model, calibration: Calibration) -> dict[str, np.ndarray]:
    """Calibration data as onnxruntime feeds for the model's inputs.

    A single array feeds a single-input model and is reshaped to the input's static
    non-batch shape when the sizes agree (flat digits ``(N, 64)`` -> ``(N, 1, 8, 8)``).

    Raises:
        DataError: When the data do not fit the model's inputs.
    """
    inputs = [v for v in model.graph.inputs if not v.is_initializer()]
    if isinstance(calibration, Mapping):
        missing = sorted({v.name for v in inputs} - set(calibration))
        if missing:
            raise DataError(f"calibration data lack model inputs {missing}")
        return {v.name: _fit(np.asarray(calibration[v.name]), v) for v in inputs}
    if len(inputs) != 1:
        raise DataError(f"the model has {len(inputs)} inputs; pass calibration as a mapping")
    return {inputs[0].name: _fit(np.asarray(calibration), inputs[0])}


def _fit(x: np.ndarray, value: ir.Value) -> np.ndarray:
    dtype = value.dtype.numpy() if value.dtype is not None else np.float32
    dims = list(value.shape)[1:] if value.shape is not None else None
    if x.ndim < 2 or len(x) == 0:
        raise DataError(
            f"calibration data for {value.name!r} must be (samples, ...), not {x.shape}"
        )
    if dims is not None and all(isinstance(d, int) for d in dims):
        if int(np.prod(x.shape[1:])) != int(np.prod(dims)):
            raise DataError(
                f"calibration samples have shape {x.shape[1:]} but input "
                f"{value.name!r} takes {tuple(dims)}"
            )
        x = x.reshape(len(x), *dims)
    return np.ascontiguousarray(x, dtype=dtype)


def run_values(
    model: ir.Model, feeds: Mapping[str, np.ndarray], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The values called ``names`` for every calibration sample, in order of the samples.

    Raises:
        RewriteError: When onnxruntime refuses the model or a name is not a value.
    """
    session = _session(model, names)
    n = len(next(iter(feeds.values())))
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, n, BATCH):
        batch = {k: v[start : start + BATCH] for k, v in feeds.items()}
        with ort_errors("run the scaled model", RewriteError):
            outs = session.run(list(names), batch, quiet_run_options())
        for name, out in zip(names, outs, strict=True):
            chunks[name].append(out)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


def _session(model: ir.Model, names: Sequence[str]):
    values = {v.name: v for node in model.graph for v in node.outputs if v is not None}
    values.update({v.name: v for v in model.graph.inputs})
    unknown = [n for n in names if n not in values]
    if unknown:
        raise RewriteError(f"no values named {unknown} in the model")
    outputs = model.graph.outputs
    extra = [values[n] for n in dict.fromkeys(names) if not values[n].is_graph_output()]
    outputs.extend(extra)
    try:
        proto = ir.serde.serialize_model(model)
    finally:
        for _ in extra:
            outputs.pop()
    return make_session(proto, error=RewriteError)
