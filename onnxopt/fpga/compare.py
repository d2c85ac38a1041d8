"""Exact comparisons against onnxruntime on the QDQ model (no tolerance)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from onnxopt.data.shaping import adapt_inputs, onnx_input_shape


@dataclasses.dataclass(frozen=True)
class Comparison:
    """How many output values of ``candidate`` equal onnxruntime's exactly.

    Attributes:
        candidate: What was compared (``qonnx executor``, ``hls4ml C++ emulation``).
        samples: Input samples run.
        total: Output values compared.
        exact: Output values bit-equal to onnxruntime's.
        max_abs_diff: The largest absolute difference (0.0 when all are exact).
    """

    candidate: str
    samples: int
    total: int
    exact: int
    max_abs_diff: float

    @property
    def all_exact(self) -> bool:
        return self.exact == self.total

    def summary(self) -> str:
        """``5000/5000 outputs exact (100.00%), max |diff| 0``."""
        share = 100.0 * self.exact / self.total if self.total else 100.0
        return (
            f"{self.candidate}: {self.exact}/{self.total} outputs exact ({share:.2f}%) on "
            f"{self.samples} samples, max |diff| {self.max_abs_diff:.3g}"
        )

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "all_exact": self.all_exact}


def model_inputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """``x`` as float32 shaped like the model's first input."""
    shaped = adapt_inputs(x, onnx_input_shape(model), input_name=model.graph.input[0].name)
    return np.ascontiguousarray(shaped, dtype=np.float32)


def reference_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """onnxruntime's first output of the QDQ ``model`` on ``x`` (CPU, all optimizations: the
    fused integer kernels a deployment would be compared with)."""
    from onnxopt.runtime.ort import make_session, quiet_run_options

    session = make_session(model)
    name = session.get_inputs()[0].name
    feeds = {name: model_inputs(model, x)}
    return np.asarray(session.run(None, feeds, quiet_run_options())[0])


def compare(candidate: str, got: np.ndarray, expected: np.ndarray) -> Comparison:
    """Compare two output arrays value by value, exactly."""
    got = np.asarray(got, dtype=np.float64).reshape(expected.shape)
    want = np.asarray(expected, dtype=np.float64)
    diff = np.abs(got - want)
    exact = int(np.sum(got == want))
    max_diff = float(np.max(diff)) if diff.size else 0.0
    return Comparison(candidate, int(expected.shape[0]), int(want.size), exact, max_diff)
