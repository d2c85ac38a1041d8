"""Helpers of the reliability tests: a pickle payload that leaves a marker, the one-line error
check, tiny models."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class MarkerPayload:
    """Unpickling this creates the file ``marker`` (``open(marker, 'w')``): proof that a reader
    ran code from a data file. Pickling it only records the call."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def gemm_model(features: int = 16, classes: int = 5, seed: int = 0) -> onnx.ModelProto:
    """``x ['N', features] -> Gemm 'fc' -> y ['N', classes]`` at opset 21."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "w"),
        numpy_helper.from_array(np.zeros(classes, np.float32), "b"),
    ]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def assert_one_line(outcome, *fragments: str, code: int = 2) -> str:
    """The outcome is exit ``code`` with exactly one ``error:`` line holding every fragment."""
    exit_code, _, err = outcome
    line = err.strip()
    assert exit_code == code, err
    assert line.startswith("error: ") and "\n" not in line, err
    assert "Traceback" not in err and "Aborted" not in err, err
    for fragment in fragments:
        assert fragment in line, line
    return line


CHEAP_EVALUATION = """\
[search.evaluation]
batch_sizes = [1]
warmup = 1
repeats = 2
min_time_s = 0
"""
"""Search evaluation settings that keep a test search fast (latency at batch 1, 2 runs)."""
