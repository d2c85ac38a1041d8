"""Calibrated "auto" activation fractions: min/max and percentile, derived independently.

``[calibration] method = "minmax" | "percentile"`` (with ``percentile``, default 99.999) picks
onnxopt's streaming min/max (the tensors and the result of onnxruntime's ``MinMaxCalibrater``,
checked against it below) or onnxruntime's ``PercentileCalibrater``; onnxopt then takes the
fewest integer bits covering the calibrated ``max(|low|, |high|)``. What onnxruntime 1.32
computes (``onnxruntime/quantization/calibrate.py``), with the ``symmetric=False`` that
onnxopt passes for percentile:

* minmax: the exact minimum and maximum over every calibration batch;
* percentile: one histogram of the raw values over ``[-T, T]`` (``T`` = max |value|,
  2048 bins), and ``low, high`` = the bin edges where the cumulative count reaches
  ``(100 - p) / 2`` % and ``100 - (100 - p) / 2`` %, i.e. the central ``p`` % is kept and
  half the rest is cut from *each* tail. That is ``np.percentile(a, [(100-p)/2, 100-(100-p)/2])``
  to within a bin (onnxruntime returns a bin's left edge), clamped to the data's extremes.

The expected fractions below come from numpy alone: ``np.percentile`` / ``min`` / ``max`` of
the activations and the rule "largest ``f`` with ``max_abs <= hi * 2**-f``". The data keep
every expected fraction at least two histogram bins away from a change, so the histogram's
resolution cannot decide the result.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config import validate
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.optimizer.quantization.quantizer import Quantizer

K = 8
BINS = 2048  # onnxruntime's default for percentile calibration


def model(relu: bool = False) -> onnx.ModelProto:
    """``x -> (Relu) -> Gemm -> y``: the Gemm's input is the calibrated tensor."""
    rng = np.random.default_rng(0)
    nodes, x = [], "x"
    if relu:
        nodes.append(helper.make_node("Relu", ["x"], ["x_relu"], "relu"))
        x = "x_relu"
    nodes.append(helper.make_node("Gemm", [x, "W", "b"], ["y"], "fc", transB=1))
    graph = helper.make_graph(
        nodes,
        "calib",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [
            numpy_helper.from_array(rng.uniform(-1, 1, (3, K)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.uniform(-1, 1, 3).astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def largest_int(width: int, signed: bool) -> int:
    return 2 ** (width - 1) - 1 if signed else 2**width - 1


def expected_frac(max_abs: float, width: int, signed: bool) -> int:
    """The largest ``f`` with ``max_abs <= hi * 2**-f``: the fewest integer bits, no saturation."""
    hi = largest_int(width, signed)
    f = -64
    while hi * 2.0 ** -(f + 1) >= max_abs:
        f += 1
    return f


def central_max_abs(a: np.ndarray, percentile: float) -> float:
    """max |bound| of the central ``percentile`` % of ``a`` (half the rest cut per tail)."""
    cut = (100.0 - percentile) / 2
    low, high = np.percentile(a.astype(np.float64), [cut, 100.0 - cut])
    return float(max(abs(low), abs(high)))


def config(width: int, method: str, percentile: float = 99.999) -> QuantizationConfig:
    return validate(
        QuantizationConfig,
        {
            "calibration": {"method": method, "percentile": percentile},
            "default": {"data_in_width": width, "data_in_frac_width": "auto",
                        "weight_width": 8, "weight_frac_width": 6,
                        "bias_width": 16, "bias_frac_width": 8},
        },
    )  # fmt: skip


def input_quantization(quantized: onnx.ModelProto) -> tuple[int, int]:
    """(fraction, zero point) of the Gemm's activation, read from its DequantizeLinear."""
    inits = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    producer = {out: n for n in quantized.graph.node for out in n.output}
    gemm = next(n for n in quantized.graph.node if n.op_type == "Gemm")
    dq = producer[gemm.input[0]]
    assert dq.op_type == "DequantizeLinear"
    mantissa, exponent = np.frexp(float(inits[dq.input[1]]))
    assert mantissa == 0.5  # a power-of-two scale
    return int(1 - exponent), int(inits[dq.input[2]])


def auto_frac(x: np.ndarray, width: int, method: str, percentile=99.999, relu=False) -> int:
    """The fraction onnxopt picks for the Gemm input, calibrating on ``x``."""
    candidate = Quantizer(model(relu), x).quantize(config(width, method, percentile))
    frac, zero_point = input_quantization(candidate.model)
    signed = not relu
    assert zero_point == (128 if signed and width <= 8 else 0)  # uint8 codes around 128
    return frac


def robust(max_abs: float, spread: float, width: int, signed: bool) -> int:
    """``expected_frac(max_abs)``, asserting it holds for anything within ``spread``."""
    f = expected_frac(max_abs, width, signed)
    assert expected_frac(max_abs - spread, width, signed) == f
    assert expected_frac(max_abs + spread, width, signed) == f
    return f


def normal_with_outliers(seed: int = 11, n: int = 256, outliers: int = 6) -> np.ndarray:
    """N(0, 0.5) samples with ``outliers`` values in +-[18, 22] on each side."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 0.5, (n, K))
    where = rng.choice(a.size, 2 * outliers, replace=False)
    a.flat[where[:outliers]] = rng.uniform(18, 22, outliers)
    a.flat[where[outliers:]] = -rng.uniform(18, 22, outliers)
    return a.astype(np.float32)


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [8, 12])
@pytest.mark.parametrize("percentile", [99.0, 99.9])
def test_percentile_fraction_matches_numpy_percentile(percentile, width):
    """6 outliers per side in 2048 values: p=99 cuts them (0.5 % per tail), p=99.9 keeps them."""
    x = normal_with_outliers()
    bin_width = 2 * float(np.abs(x).max()) / BINS
    max_abs = central_max_abs(x, percentile)
    expected = robust(max_abs, 2 * bin_width, width, True)
    # on this symmetric data the |x| reading of "percentile" gives the same fraction
    assert expected == expected_frac(float(np.percentile(np.abs(x), percentile)), width, True)
    assert auto_frac(x, width, "percentile", percentile) == expected
    ranges = Quantizer(model(), x).ranges(config(width, "percentile", percentile))
    cut = (100.0 - percentile) / 2
    low, high = np.percentile(x.astype(np.float64), [cut, 100.0 - cut])
    assert abs(ranges["x"].low - low) <= 2 * bin_width
    assert abs(ranges["x"].high - high) <= 2 * bin_width


def test_percentile_99_vs_100_and_minmax_on_an_outlier():
    """One outlier (30.0): p=99 ignores it (it saturates), p=100 and minmax cover it."""
    rng = np.random.default_rng(5)
    x = rng.normal(0, 0.5, (256, K)).astype(np.float32)
    x[200, 3] = 30.0
    bin_width = 2 * 30.0 / BINS
    f99 = auto_frac(x, 8, "percentile", 99.0)
    f100 = auto_frac(x, 8, "percentile", 100.0)
    f_minmax = auto_frac(x, 8, "minmax")
    assert f99 == robust(central_max_abs(x, 99.0), 2 * bin_width, 8, True) == 6
    assert f100 == f_minmax == robust(30.0, 2 * bin_width, 8, True) == 2
    assert 127 * 2.0**-f99 < 30.0 <= 127 * 2.0**-f100


@pytest.mark.parametrize("relu", [False, True], ids=["signed", "relu"])
@pytest.mark.parametrize(
    ("extreme", "frac_shift"),
    [(1.0, 0), (1.0 + 2.0**-20, -1), (-1.0, 0), (-(1.0 + 2.0**-20), -1)],
    ids=["max-on-boundary", "max-above", "min-on-boundary", "min-below"],
)
def test_minmax_fraction_covers_the_true_max(relu, extreme, frac_shift):
    """The extreme sits in the last (partial) batch of 200 samples, exactly on a boundary
    ``hi * 2**-5`` (fraction 5) or one float32 step beyond it (fraction 4, else it would
    saturate). After a Relu only non-negative values count and the range is unsigned."""
    width, base = 8, 5
    signed = not relu
    boundary = largest_int(width, signed) * 2.0**-base
    rng = np.random.default_rng(2)
    x = rng.uniform(-0.9, 0.9, (200, K)) * boundary
    x[197, 5] = np.float32(extreme * boundary)
    x = x.astype(np.float32)
    seen = np.maximum(x, 0) if relu else x
    true_max = float(np.abs(seen).max())
    frac = auto_frac(x, width, "minmax", relu=relu)
    assert frac == expected_frac(true_max, width, signed)
    assert largest_int(width, signed) * 2.0**-frac >= true_max  # nothing saturates
    if relu and extreme < 0:  # the negative extreme vanishes behind the Relu
        assert frac == base and true_max < 0.9 * boundary
    else:
        assert frac == base + frac_shift


# ---------------------------------------------------------------------------------------
# Found by these tests and fixed: a short last batch, percentile 100, the ReLU reading.


def test_percentile_calibration_with_a_partial_last_batch():
    # onnxruntime's histogram collector stacks one call's outputs: onnxopt feeds one batch
    # per call, so 100 samples (batches of 64 and 36) calibrate too
    x = normal_with_outliers(n=100, outliers=2)
    bin_width = 2 * float(np.abs(x).max()) / BINS
    expected = robust(central_max_abs(x, 99.0), 2 * bin_width, 8, True)
    assert auto_frac(x, 8, "percentile", 99.0) == expected


def test_percentile_on_a_relu_tensor_cuts_half_the_rest_from_the_top():
    """Documented reading: percentile 99 keeps the central 99 %; a ReLU output has no lower
    tail, so its range ends at the 99.5th percentile (0.8 % outliers at ~3 stay covered)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, 1.5, (256, K)).astype(np.float32)
    where = rng.choice(x.size, 16, replace=False)  # 16 / 2048 = 0.78 %
    x.flat[where] = rng.uniform(2.9, 3.1, 16)
    r = np.maximum(x, 0.0)
    bin_width = 2 * float(r.max()) / BINS
    expected = robust(float(np.percentile(r, 99.5)), 2 * bin_width, 8, False)
    assert expected == 6  # the outliers need fraction 6; np.percentile(r, 99) would give 7
    assert auto_frac(x, 8, "percentile", 99.0, relu=True) == expected


def test_percentile_100_covers_the_true_max():
    # onnxruntime's histogram returns the left edge of the top bin, below the maximum;
    # percentile 100 is minmax
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.5, 1.5, (256, K)).astype(np.float32)
    x[3, 2] = 127 / 32 * (1 + 2.0**-20)
    assert auto_frac(x, 8, "minmax") == 4 == expected_frac(float(x.max()), 8, True)
    assert auto_frac(x, 8, "percentile", 100.0) == 4


def _with_constants() -> onnx.ModelProto:
    """A foreign-style graph: a Constant-node weight, a Reshape by an initializer shape, two
    float inputs and an int64 one (not observed), opset 13."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(size=(6, 4)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Constant", [], ["wc"], value=w),
        helper.make_node("MatMul", ["a", "wc"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["s"]),
        helper.make_node("Relu", ["s"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["flat", "idf"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 6]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 4]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("which", ["digits-cnn", "constants"])
def test_minmax_ranges_equal_onnxruntimes_minmax_calibrater(which, exported_recipe, tmp_path):
    """The streaming min/max sees the tensors onnxruntime's MinMaxCalibrater sees and finds
    the same extremes, over several batches with a shorter last one."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from onnxopt.optimizer.quantization.calibration import _Reader, calibrate
    from onnxopt.runtime.io import Feeds, graph_inputs

    rng = np.random.default_rng(2)
    if which == "digits-cnn":
        proto = onnx.load(exported_recipe("digits-cnn"))
        data = {proto.graph.input[0].name: rng.uniform(0, 16, (37, 1, 8, 8)).astype(np.float32)}
    else:
        proto = _with_constants()
        data = {"a": rng.normal(size=(37, 6)).astype(np.float32),
                "b": rng.normal(size=(37, 4)).astype(np.float32),
                "ids": rng.integers(0, 5, (37, 4))}  # fmt: skip
    before = proto.SerializeToString()
    ours = calibrate(proto, Feeds(graph_inputs(proto), data), batch_size=16)
    assert proto.SerializeToString() == before  # the caller's model is left as it was
    path = tmp_path / "m.onnx"
    onnx.save_model(proto, str(path))
    theirs = create_calibrator(path, None, str(tmp_path / "aug.onnx"), CalibrationMethod.MinMax)
    for start in range(0, 37, 16):
        batch = {k: v[start : start + 16] for k, v in data.items()}
        theirs.collect_data(_Reader([batch]))
    expected = {k: v.range_value for k, v in theirs.compute_data().data.items()}
    assert set(ours) == set(expected) and len(ours) >= 5
    for name, (low, high) in expected.items():
        assert (ours[name].low, ours[name].high) == (float(np.min(low)), float(np.max(high)))
