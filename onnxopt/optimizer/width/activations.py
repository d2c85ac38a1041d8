"""Intermediate activations on calibration data, read with onnxruntime.

The requested tensors are added as graph outputs of the model for the duration of one
serialization (the model itself is left as it was), and the session runs in batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from onnxopt.errors import RewriteError
from onnxopt.runtime.io import Feeds, graph_inputs
from onnxopt.runtime.ort import make_session, ort_errors, quiet_run_options

BATCH = 512
"""Samples per onnxruntime run: bounds the memory of the activations being read."""

Calibration = np.ndarray | Mapping[str, np.ndarray]


def model_feeds(
    model: onnx.ModelProto, calibration: Calibration, fixed: Mapping[str, Any] | None = None
) -> Feeds:
    """Calibration data as feeds for every input of the model (see :class:`Feeds`: one
    array for a single-input model, one per input name otherwise, ``fixed`` values for
    inputs the data do not give).

    Raises:
        DataError: When the data do not fit the model's inputs.
    """
    return Feeds(graph_inputs(model), calibration, fixed)


def run_values(model: ir.Model, feeds: Feeds, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The values called ``names`` for every calibration sample, in order of the samples.

    Raises:
        RewriteError: When onnxruntime refuses the model or a name is not a value.
    """
    session = _session(model, names)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(feeds), BATCH):
        batch = feeds.batch(start, start + BATCH)
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
