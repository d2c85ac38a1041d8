"""onnxruntime against a from-scratch numpy fixed-point reference, through the public API.

The reference below imports nothing from onnxopt. It implements the issue's semantics:

* a tensor of width ``w`` and fraction ``f`` holds ``clamp(rint(x * 2**f), lo, hi) * 2**-f``
  (``np.rint`` rounds half to even; signed ``[-2**(w-1), 2**(w-1) - 1]``, unsigned
  ``[0, 2**w - 1]``);
* a bias of width ``b`` and fraction ``f_b`` is rounded to its own grid, then to the
  accumulator grid ``2**-(f_in + f_w)`` (half to even again; exact when ``f_b <= f_in + f_w``);
* the Gemm is computed in float64 from the dequantized values (exact here: every product
  and partial sum is an integer multiple of the accumulator step below 2**53 of them).

Models are quantized with ``Quantizer`` + ``QuantizationConfig`` (the config keys
``weight_width``, ``weight_frac_width``, ``bias_*``, ``data_in_*``, ``data_out_*``, always with
explicit fractions except in the "auto" test) or with ``quantize_model`` + ``TensorSpec``
where the config has no key (explicitly unsigned inputs, one fraction per channel). The
stored integer weights and biases are compared with the reference integers, and the
onnxruntime outputs (ORT_DISABLE_ALL: DQ + float Gemm; ORT_ENABLE_ALL: QGemm for 8-bit
containers) with the reference outputs.

What "bit-exact" means here: onnxruntime computes the unfused graph in float32 and the
fused QGemm in int32, converting the accumulator to float32 once at the end. Both are
exact when every product and partial sum is an integer number of accumulator steps below
2**24 (float32 holds such integers exactly), so the test data keep that bound (asserted as
a precondition by :func:`assert_bit_exact`) and the outputs must then be *equal* to the
reference. Beyond that bound (:func:`test_accumulators_beyond_float32_integers`) the fused
output must still equal the float32 rounding of the exact value; only the float Gemm path
gets a tolerance, the float32 dot-product error bound.

CPUs differ: onnxruntime's u8 x s8 kernels on AVX2/AVX-512 CPUs *without* VNNI use
VPMADDUBSW, whose int16 pair sums saturate for extreme codes (255 x -128 twice). onnxopt
then stores signed 8-bit weights as uint8 with zero point 128 (u8 x u8 kernels, exact
everywhere). 8-bit weight tests run both representations (``target_cpu`` "avx512-vnni":
int8, "any": uint8): uint8 must be exact on every CPU; int8 must be exact where this CPU's
u8s8 path is, and is shown to saturate where it is not. Whether it is, this file finds out
with its own probe (:func:`u8s8_saturates_here`), not with onnxopt's.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config import validate
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.errors import ConfigError
from onnxopt.optimizer.quantization import NodeQuantSpec, TensorSpec, quantize_model
from onnxopt.optimizer.quantization.quantizer import Quantizer

LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]
FUSED = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
# the weight representations, by the target CPU class that picks them
TARGETS = {"int8": "avx512-vnni", "uint8": "any"}
FLOAT32_INTEGERS = 2**24  # every integer up to this is exact in float32
WIDTHS = range(2, 17)


# ---------------------------------------------------------------------------------------
# The independent reference (numpy only).


@dataclasses.dataclass(frozen=True)
class Fmt:
    """A fixed-point format; ``frac`` may be a vector (one per output channel)."""

    width: int
    frac: int | tuple[int, ...]
    signed: bool = True

    @property
    def bounds(self) -> tuple[int, int]:
        if self.signed:
            return -(2 ** (self.width - 1)), 2 ** (self.width - 1) - 1
        return 0, 2**self.width - 1

    def fracs(self, ndim: int = 1, axis: int = 0) -> np.ndarray:
        """The fraction(s) as float64, shaped to broadcast along ``axis`` of an array."""
        f = np.asarray(self.frac, np.float64)
        if f.ndim == 0:
            return f
        shape = [1] * ndim
        shape[axis] = -1
        return f.reshape(shape)

    def ints(self, x, axis: int = 0) -> np.ndarray:
        """``clamp(round_half_to_even(x * 2**f), lo, hi)`` as float64 integers."""
        x = np.asarray(x, np.float64)
        return np.clip(np.rint(x * 2.0 ** self.fracs(x.ndim, axis)), *self.bounds)

    def values(self, x, axis: int = 0) -> np.ndarray:
        """The dequantized fixed-point values."""
        x = np.asarray(x, np.float64)
        return self.ints(x, axis) * 2.0 ** -self.fracs(x.ndim, axis)


def auto_frac(max_abs: float, width: int, signed: bool) -> int:
    """The reference "auto" rule: the fewest integer bits such that nothing saturates.

    That is the largest ``f`` with ``max_abs <= hi * 2**-f`` (``hi`` the largest integer
    of the width), found by walking up from a fraction that surely covers the range. The
    rule is symmetric: ``-max_abs`` is covered through ``-hi`` even where ``lo = -hi - 1``
    would allow one more fraction bit.
    """
    assert max_abs > 0
    hi = Fmt(width, 0, signed).bounds[1]
    f = -64
    assert hi * 2.0**-f >= max_abs
    while hi * 2.0 ** -(f + 1) >= max_abs:
        f += 1
    return f


@dataclasses.dataclass
class Expected:
    """The reference result of one quantized Gemm ``y = x W^T + b`` (W in math layout)."""

    x_ints: np.ndarray
    w_ints: np.ndarray  # (M, K)
    bias_acc_ints: np.ndarray  # (M,), integers of the accumulator step
    acc_frac: np.ndarray  # () or (M,)
    y: np.ndarray  # float64, after the optional output quantization
    bound: np.ndarray  # sum of |products| + |bias| in accumulator steps, per output


def reference(
    x, w, b, *, act: Fmt, weight: Fmt, bias: Fmt, relu_in=False, out: Fmt | None = None,
    relu_out=False,
) -> Expected:  # fmt: skip
    """The fixed-point Gemm in float64 from the dequantized values (weights per row).

    ``x``, ``w`` and ``b`` are first rounded to float32, the type the model stores.
    """
    x, w, b = (np.asarray(a, np.float32).astype(np.float64) for a in (x, w, b))
    if relu_in:
        x = np.maximum(x, 0.0)
    x_ints = act.ints(x)
    w_ints = weight.ints(w, axis=0)
    acc = act.fracs() + weight.fracs()
    bias_own = bias.ints(b)  # rounded to the bias's own grid first ...
    bias_acc = np.rint(bias_own * 2.0 ** (acc - bias.fracs()))  # ... then to the acc grid
    xq = x_ints * 2.0 ** -act.fracs()
    wq = w_ints * 2.0 ** -weight.fracs(2, 0)
    y = xq @ wq.T + bias_acc * 2.0**-acc
    if relu_out:
        y = np.maximum(y, 0.0)
    if out is not None:
        y = out.values(y)
    bound = np.abs(x_ints) @ np.abs(w_ints).T + np.abs(bias_acc)
    return Expected(x_ints, w_ints, bias_acc, acc, y, bound)


def probe_units(width: int, signed: bool, seed: int = 0) -> np.ndarray:
    """Values in units of the grid step: on the grid, exact ties, near ties, beyond range.

    Every integer of the range (and 3 beyond each end) for narrow widths; for wide ones
    both ends, around zero and a sample of the inside. Ties ``k + 0.5`` cover even and odd
    ``k``; far-out values (1000 ranges away) saturate at both ends.
    """
    lo, hi = Fmt(width, 0, signed).bounds
    if hi - lo <= 256:
        ks = np.arange(lo - 3, hi + 4)
    else:
        inside = np.random.default_rng(seed).integers(lo, hi, 48)
        ks = np.unique(np.r_[lo - 3 : lo + 5, -5:6, hi - 4 : hi + 4, inside])
    far = np.array([lo - 1000 * (hi - lo + 1), hi + 1000 * (hi - lo + 1)], np.float64)
    units = np.concatenate([ks, ks + 0.5, ks - 0.25, far, [0.0]])
    assert {0, 1} <= {int(k) % 2 for k in ks}  # ties above even and odd integers
    return units


def as_rows(values: np.ndarray, cols: int) -> np.ndarray:
    """``values`` laid out in rows of ``cols`` (zero padded), as float32."""
    padded = np.zeros(-(-len(values) // cols) * cols)
    padded[: len(values)] = values
    return padded.reshape(-1, cols).astype(np.float32)


@functools.cache
def u8s8_saturates_here() -> bool:
    """Whether this CPU's fused u8 x s8 MatMul saturates: 255 x -128, eight times."""
    k = 8
    nodes = [
        helper.make_node("DequantizeLinear", ["a", "one", "za"], ["af"]),
        helper.make_node("DequantizeLinear", ["w", "one", "zw"], ["wf"]),
        helper.make_node("MatMul", ["af", "wf"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.float32(1), "one"),
        numpy_helper.from_array(np.uint8(0), "za"),
        numpy_helper.from_array(np.full((k, 1), -128, np.int8), "w"),
        numpy_helper.from_array(np.int8(0), "zw"),
    ]
    graph = helper.make_graph(
        nodes, "probe", [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    got = session.run(None, {"a": np.full((1, k), 255, np.uint8)})[0]
    return float(got[0, 0]) != -255.0 * 128 * k


def fused_exact(rep: str) -> bool:
    """Whether a representation is exact in this CPU's fused 8-bit kernels."""
    return rep == "uint8" or not u8s8_saturates_here()


def test_reference_rounds_half_to_even_and_saturates():
    """The reference itself, on hand-computed values."""
    ties = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    np.testing.assert_array_equal(Fmt(8, 0).ints(ties), [-2, -2, 0, 0, 2, 2, 4])
    np.testing.assert_array_equal(Fmt(3, 1).values([-9.0, -2.25, 1.75, 9.0]), [-2, -2, 1.5, 1.5])
    np.testing.assert_array_equal(Fmt(2, 0, False).ints([-1.0, 2.5, 3.5, 7.0]), [0, 2, 3, 3])
    np.testing.assert_array_equal(Fmt(4, -2).values([6.0, 10.0, 100.0]), [8.0, 8.0, 28.0])
    assert auto_frac(127 / 64, 8, True) == 6 and auto_frac(127 / 64 + 1e-9, 8, True) == 5
    assert auto_frac(255 / 64, 8, False) == 6 and auto_frac(1.0, 2, True) == 0


# ---------------------------------------------------------------------------------------
# Models, onnxruntime, and what the quantized graph stores.


def gemm_model(w: np.ndarray, b: np.ndarray, *, relu_in=False, relu_out=False, trans_b=True):
    """``x -> (Relu) -> Gemm(W, b) -> (Relu) -> y`` with ``W`` given as (M, K)."""
    m, k = w.shape
    stored = w if trans_b else np.ascontiguousarray(w.T)
    nodes, x = [], "x"
    if relu_in:
        nodes.append(helper.make_node("Relu", ["x"], ["x_relu"], "relu_in"))
        x = "x_relu"
    gemm_out = "g" if relu_out else "y"
    nodes.append(helper.make_node("Gemm", [x, "W", "b"], [gemm_out], "fc", transB=int(trans_b)))
    if relu_out:
        nodes.append(helper.make_node("Relu", ["g"], ["y"], "relu_out"))
    graph = helper.make_graph(
        nodes,
        "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", m])],
        [
            numpy_helper.from_array(stored.astype(np.float32), "W"),
            numpy_helper.from_array(b.astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def quantize_with_config(
    model, storage="container", granularity="per_tensor", target_cpu="auto", **keys
):
    """The public config path: ``Quantizer(model).quantize(QuantizationConfig)``."""
    config = validate(
        QuantizationConfig,
        {"storage": storage, "granularity": granularity, "target_cpu": target_cpu,
         "default": keys},
    )  # fmt: skip
    return Quantizer(model).quantize(config).model


def run(model: onnx.ModelProto, x: np.ndarray, level) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def runs_qgemm(model: onnx.ModelProto, tmp_path) -> bool:
    """Whether onnxruntime's optimizer turned the Gemm into its integer QGemm kernel."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node}
    return "QGemm" in ops and "Gemm" not in ops


def _frac_of(scale: np.ndarray) -> np.ndarray:
    mantissa, exponent = np.frexp(scale.astype(np.float64))
    assert np.all(mantissa == 0.5), f"scale {scale} is not a power of two"
    return 1 - exponent


@dataclasses.dataclass
class Stored:
    """One Gemm input as the quantized graph stores it."""

    ints: np.ndarray
    frac: np.ndarray
    zero_point: np.ndarray | None
    data_type: str


def stored_input(model: onnx.ModelProto, index: int) -> Stored:
    """The integers, fraction(s) and type behind the DequantizeLinear feeding Gemm ``index``."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    types = {t.name: TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    dq = producer[gemm.input[index]]
    assert dq.op_type == "DequantizeLinear"
    source = dq.input[0]
    if source in producer and producer[source].op_type == "Cast":  # packed INT4/INT2
        source = producer[source].input[0]
    zero_point = inits[dq.input[2]].astype(np.int64) if len(dq.input) > 2 else None
    ints = inits[source].astype(np.int64) if source in inits else None
    return Stored(ints, _frac_of(inits[dq.input[1]]), zero_point, types.get(source, "-"))


def assert_bit_exact(
    model: onnx.ModelProto, x: np.ndarray, expected: Expected, fused: bool = True
) -> None:
    """onnxruntime's output equals the reference at both optimization levels.

    With ``fused=False`` (int8 weights on a CPU whose u8s8 kernels saturate) the fused run
    must *differ*: the test data reach the saturating codes, which is why onnxopt picks
    uint8 weights there.
    """
    # Precondition on the test data: all products and partial sums are integers of the
    # accumulator step below 2**24, so float32 Gemm and int32 QGemm are both exact.
    assert expected.bound.max() <= FLOAT32_INTEGERS, "test data too large for an exact check"
    y32 = expected.y.astype(np.float32)
    np.testing.assert_array_equal(y32, expected.y)
    for level in LEVELS:
        got = run(model, x, level)
        assert got.dtype == np.float32
        if level == FUSED and not fused:
            assert not np.array_equal(got, y32), "u8s8 saturation expected on this CPU"
        else:
            np.testing.assert_array_equal(got, y32, err_msg=f"at {level.name}")


def assert_stored(model: onnx.ModelProto, expected: Expected, weight: Fmt, trans_b=True):
    """The stored weight and bias integers are the reference's, at the reference scales.

    Signed weights are int8/int16/INT4/INT2 codes with zero point 0, or uint8 codes around
    zero point 128 (the u8u8 representation); every DequantizeLinear has a zero point.
    """
    w = stored_input(model, 1)
    assert w.zero_point is not None
    offset = 128 if w.data_type == "UINT8" else 0
    np.testing.assert_array_equal(w.zero_point, offset)
    np.testing.assert_array_equal(
        w.ints - offset, expected.w_ints if trans_b else expected.w_ints.T
    )
    np.testing.assert_array_equal(w.frac, weight.frac)
    b = stored_input(model, 2)
    assert b.data_type == "INT32"
    assert b.zero_point is not None and not np.any(b.zero_point)
    np.testing.assert_array_equal(b.ints, expected.bias_acc_ints)
    np.testing.assert_array_equal(b.frac, expected.acc_frac)
    return w


# ---------------------------------------------------------------------------------------
# Activation widths 2..16, signed and unsigned, ties and saturation.

ACT_K = 4


def _activation_case(width: int):
    """Weights: one one-hot row per input feature (isolates each x), two dense rows."""
    rng = np.random.default_rng(width)
    units = np.zeros((ACT_K + 2, ACT_K))
    units[np.arange(ACT_K), np.arange(ACT_K)] = [3, -5, 7, -1]
    units[ACT_K:] = rng.choice(np.r_[-31:0, 1:32], (2, ACT_K))
    weight = Fmt(8, 3)
    w = units * 2.0**-weight.frac
    b = rng.uniform(-1, 1, ACT_K + 2).astype(np.float32)
    return weight, w, b


@pytest.mark.parametrize("sign", ["signed", "relu", "unsigned"])
@pytest.mark.parametrize("width", WIDTHS)
def test_activation_widths(width, sign, tmp_path):
    """Every activation width; signed inputs, inputs after a Relu, and explicitly unsigned."""
    weight, w, b = _activation_case(width)
    signed = sign == "signed"
    act = Fmt(width, width - 3, signed)  # fraction -1 (steps of 2) .. 13
    bias = Fmt(16, act.frac + weight.frac)
    units = np.concatenate([probe_units(width, True), probe_units(width, False)])
    x = as_rows(units * 2.0**-act.frac, ACT_K)
    model = gemm_model(w, b, relu_in=sign == "relu")
    if sign == "unsigned":  # the config has no signedness key: a spec says so
        spec = NodeQuantSpec(
            weight=TensorSpec(weight.width, weight.frac),
            bias=TensorSpec(bias.width, bias.frac),
            data_in=TensorSpec(width, act.frac, signed=False),
        )
        quantized = quantize_model(model, {"fc": spec}).model
    else:
        quantized = quantize_with_config(
            model, weight_width=weight.width, weight_frac_width=weight.frac,
            bias_width=bias.width, bias_frac_width=bias.frac,
            data_in_width=width, data_in_frac_width=act.frac,
        )  # fmt: skip
    expected = reference(x, w, b, act=act, weight=weight, bias=bias, relu_in=sign == "relu")
    assert_stored(quantized, expected, weight)
    activation = stored_input(quantized, 0)
    np.testing.assert_array_equal(activation.frac, act.frac)
    # signed values in 8-bit containers are uint8 codes around 128, unsigned ones around 0
    assert int(activation.zero_point) == (128 if signed and width <= 8 else 0)
    assert_bit_exact(quantized, x, expected)
    if width <= 8:
        assert runs_qgemm(quantized, tmp_path)


# ---------------------------------------------------------------------------------------
# Weight widths 2..16, container and packed storage.

W_K = 4
X_ROWS = np.vstack(
    [
        np.diag([1.0, -3.0, 5.0, -7.0]),  # one-hot rows isolate each weight
        np.zeros((1, W_K)),  # y = bias exactly
        np.random.default_rng(1).choice(np.r_[-100:0, 1:101], (6, W_K)),
    ]
)


def _storage_cases():
    for width in WIDTHS:
        reps = ("int8", "uint8") if width == 8 else ("auto",)
        for rep in reps:
            yield pytest.param(width, "container", rep, id=f"{width}-container-{rep}")
    for width in (2, 3, 4):
        yield pytest.param(width, "packed", "auto", id=f"{width}-packed")


def _weight_type(width: int, storage: str, rep: str) -> str:
    if storage == "packed" and width <= 4:
        return "INT2" if width <= 2 else "INT4"
    if width == 8:
        return rep.upper()
    return "INT8" if width <= 8 else "INT16"


@pytest.mark.parametrize(("width", "storage", "rep"), _storage_cases())
def test_weight_widths(width, storage, rep, tmp_path):
    """Every weight width: ties and saturation in W, stored ints and outputs exact.

    8 bits run both weight representations; narrower widths are int8 whatever the CPU
    (|code| <= 64 cannot saturate a u8s8 pair sum).
    """
    act = Fmt(8, 4)
    weight = Fmt(width, width - 3)  # fraction -1 (steps of 2) .. 13, range about +-4
    acc = act.frac + weight.frac
    bias = Fmt(16, min(acc, 12))
    w = as_rows(probe_units(width, True, seed=width) * 2.0**-weight.frac, W_K).astype(np.float64)
    b = np.random.default_rng(width).uniform(-2, 2, len(w))
    x = (X_ROWS * 2.0**-act.frac).astype(np.float32)
    model = gemm_model(w, b)
    quantized = quantize_with_config(
        model, storage=storage, target_cpu=TARGETS.get(rep, "auto"), weight_width=width,
        weight_frac_width=weight.frac, bias_width=bias.width, bias_frac_width=bias.frac,
        data_in_width=act.width, data_in_frac_width=act.frac,
    )  # fmt: skip
    expected = reference(x, w, b, act=act, weight=weight, bias=bias)
    stored = assert_stored(quantized, expected, weight)
    assert stored.data_type == _weight_type(width, storage, rep)
    assert_bit_exact(quantized, x, expected, fused=rep == "auto" or fused_exact(rep))
    if width <= 8:
        assert runs_qgemm(quantized, tmp_path)


# ---------------------------------------------------------------------------------------
# Bias widths, rounded on their own grid and again on the accumulator grid.


@pytest.mark.parametrize("shift", [-3, 0, 2], ids=["coarser", "same", "finer"])
@pytest.mark.parametrize("width", [2, 4, 8, 12, 16])
def test_bias_widths(width, shift):
    """Ties and saturation of the bias at its own width; ``shift = f_b - (f_in + f_w)``.

    With ``f_b > f_in + f_w`` ("finer") the bias integer is rounded a second time, half to
    even, onto the accumulator grid, as the issue describes.
    """
    act, weight = Fmt(8, 4), Fmt(8, 3)
    bias = Fmt(width, act.frac + weight.frac + shift)
    b = probe_units(width, True, seed=width) * 2.0**-bias.frac
    rng = np.random.default_rng(width)
    w = rng.choice(np.r_[-20:0, 1:21], (len(b), W_K)) * 2.0**-weight.frac
    x = (X_ROWS * 2.0**-act.frac).astype(np.float32)
    quantized = quantize_with_config(
        gemm_model(w, b), bias_width=width, bias_frac_width=bias.frac,
        weight_width=weight.width, weight_frac_width=weight.frac,
        data_in_width=act.width, data_in_frac_width=act.frac,
    )  # fmt: skip
    expected = reference(x, w, b, act=act, weight=weight, bias=bias)
    if shift > 0:  # the second rounding really happens on these probes
        assert np.any(bias.ints(b) * 2.0**-shift != expected.bias_acc_ints)
    assert_stored(quantized, expected, weight)
    assert_bit_exact(quantized, x, expected)


@pytest.mark.parametrize("width", [1, 17, 24, 32])
def test_bias_widths_outside_2_to_16_are_rejected(width):
    """Biases are stored as int32 at the accumulator scale; their width is limited to 16."""
    with pytest.raises(ConfigError, match="bias_width"):
        validate(QuantizationConfig, {"default": {"bias_width": width}})
    with pytest.raises(ConfigError, match="width"):
        TensorSpec(width, 0)


# ---------------------------------------------------------------------------------------
# Output widths 2..16 (data_out), signed and after a Relu: ties and saturation.


@pytest.mark.parametrize("relu", [False, True], ids=["signed", "relu"])
@pytest.mark.parametrize("width", WIDTHS)
def test_output_widths(width, relu):
    """y = x0 + 4 x1 on the accumulator grid; f_out = f_acc - 1 makes every odd y a tie."""
    in_width = 8 if width <= 8 else 16  # 8-bit in and out: onnxruntime runs QGemm to uint8
    act, weight = Fmt(in_width, in_width - 4), Fmt(8, 0)
    out = Fmt(width, act.frac - 1, not relu)
    bias = Fmt(16, act.frac)
    w = np.array([[1.0, 4.0], [-1.0, 3.0]])
    b = np.array([3.0, -2.0]) * 2.0**-act.frac
    fine = probe_units(in_width, True)
    fine = fine[fine == np.round(fine)]  # on the grid: ties come from the output rounding
    rng = np.random.default_rng(width)
    coarse = rng.integers(*Fmt(in_width, 0).bounds, len(fine), endpoint=True)
    x = (np.stack([fine, coarse], axis=1) * 2.0**-act.frac).astype(np.float32)
    quantized = quantize_with_config(
        gemm_model(w, b, relu_out=relu), weight_width=8, weight_frac_width=0,
        bias_width=16, bias_frac_width=bias.frac, data_in_width=in_width,
        data_in_frac_width=act.frac, data_out_width=width, data_out_frac_width=out.frac,
    )  # fmt: skip
    expected = reference(x, w, b, act=act, weight=weight, bias=bias, out=out, relu_out=relu)
    exact = reference(x, w, b, act=act, weight=weight, bias=bias, relu_out=relu).y
    in_out_steps = exact * 2.0**out.frac
    assert np.any(in_out_steps % 2 == 0.5) and np.any(in_out_steps % 2 == 1.5)  # both ties
    lo, hi = out.bounds
    assert np.any(in_out_steps > hi + 1) and (relu or np.any(in_out_steps < lo - 1))
    assert_stored(quantized, expected, weight)
    assert_bit_exact(quantized, x, expected)


# ---------------------------------------------------------------------------------------
# Per-channel weights: one fraction per output channel (either weight layout).


@pytest.mark.parametrize(
    ("width", "storage", "trans_b", "rep"),
    [
        (2, "packed", True, "auto"),
        (3, "container", False, "auto"),
        (4, "packed", False, "auto"),
        (4, "container", True, "auto"),
        (8, "container", False, "int8"),
        (8, "container", True, "int8"),
        (8, "container", False, "uint8"),
        (8, "container", True, "uint8"),
        (12, "container", True, "auto"),
        (16, "container", False, "auto"),
    ],
)
def test_per_channel_weights(width, storage, trans_b, rep, tmp_path):
    act = Fmt(8, 4)
    units = as_rows(probe_units(width, True, seed=width), W_K)
    fracs = tuple(width - 3 + (j % 4) - 1 for j in range(len(units)))
    weight = Fmt(width, fracs)
    w = units * 2.0 ** -weight.fracs(2, 0)
    bias = Fmt(16, act.frac + min(fracs) - 1)
    b = np.random.default_rng(width).uniform(-2, 2, len(w))
    x = (X_ROWS * 2.0**-act.frac).astype(np.float32)
    spec = NodeQuantSpec(
        weight=TensorSpec(width, fracs, granularity="per_channel"),
        bias=TensorSpec(bias.width, bias.frac),
        data_in=TensorSpec(act.width, act.frac),
    )
    quantized = quantize_model(
        gemm_model(w, b, trans_b=trans_b), {"fc": spec}, storage=storage,
        target_cpu=TARGETS.get(rep, "auto"),
    )  # fmt: skip
    expected = reference(x, w, b, act=act, weight=weight, bias=bias)
    assert_stored(quantized.model, expected, weight, trans_b)
    assert_bit_exact(quantized.model, x, expected, fused=rep == "auto" or fused_exact(rep))
    if width <= 8:
        assert runs_qgemm(quantized.model, tmp_path)


def test_per_channel_from_the_config_repeats_one_explicit_fraction():
    """``granularity = "per_channel"`` with a number: that fraction on every channel."""
    act, weight, bias = Fmt(8, 4), Fmt(6, 4), Fmt(12, 6)
    w = as_rows(probe_units(6, True) * 2.0**-4, W_K).astype(np.float64)
    b = np.random.default_rng(3).uniform(-2, 2, len(w))
    x = (X_ROWS * 2.0**-act.frac).astype(np.float32)
    quantized = quantize_with_config(
        gemm_model(w, b), granularity="per_channel", weight_width=6, weight_frac_width=4,
        bias_width=12, bias_frac_width=6, data_in_width=8, data_in_frac_width=4,
    )  # fmt: skip
    expected = reference(x, w, b, act=act, weight=weight, bias=bias)
    stored = assert_stored(quantized, expected, weight)
    assert stored.frac.shape == (len(w),)
    assert_bit_exact(quantized, x, expected)


# ---------------------------------------------------------------------------------------
# "auto" fractions: the reference derives them from the data itself.


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("relu", [False, True], ids=["signed", "relu"])
def test_auto_fractions_follow_the_reference_rule(granularity, relu):
    """weight/bias/data_in fractions "auto" (min/max calibration): rule and outputs.

    The data put maxima exactly on a boundary ``hi * 2**-f`` (covered: fraction ``f``) and
    just above one (fraction ``f - 1``), on both signs.
    """
    a_width, w_width, b_width = 8, 6, 12
    rng = np.random.default_rng(7)
    hi_w = 2 ** (w_width - 1) - 1
    w = rng.uniform(-1, 1, (5, W_K)) * np.array([[0.5], [0.25], [1.0], [0.1], [3.0]])
    w[0, 1] = hi_w * 2.0**-5  # exactly covered by fraction 5
    w[1, 2] = -hi_w * 2.0**-6  # negative, exactly covered by fraction 6
    w[2, 0] = hi_w * 2.0**-4 * (1 + 2.0**-20)  # just above: fraction 3
    w[4, 3] = -(hi_w + 1) * 2.0**-3  # lo * 2**-3 fits a signed integer, not +hi: fraction 2
    b = rng.uniform(-0.4, 0.4, 5)
    b[3] = (2 ** (b_width - 1) - 1) * 2.0**-12  # max |b| exactly on a boundary: fraction 12
    calib = rng.uniform(-1.5, 1.5, (64, W_K)).astype(np.float32)
    a_hi = (2**a_width - 1) if relu else (2 ** (a_width - 1) - 1)
    calib[17, 2] = a_hi * 2.0**-6  # the calibrated max, exactly on a boundary
    model = gemm_model(w, b, relu_in=relu)
    config = validate(
        QuantizationConfig,
        {
            "granularity": granularity,
            "calibration": {"method": "minmax"},
            "default": {"data_in_width": a_width, "data_in_frac_width": "auto",
                        "weight_width": w_width, "weight_frac_width": "auto",
                        "bias_width": b_width, "bias_frac_width": "auto"},
        },
    )  # fmt: skip
    quantized = Quantizer(model, calib).quantize(config).model

    seen = np.maximum(calib, 0) if relu else calib
    act = Fmt(a_width, auto_frac(float(np.abs(seen).max()), a_width, not relu), not relu)
    if granularity == "per_channel":
        weight = Fmt(w_width, tuple(auto_frac(float(m), w_width, True) for m in np.abs(w).max(1)))
        assert weight.frac[:3] == (5, 6, 3) and weight.frac[4] == 2
    else:
        weight = Fmt(w_width, auto_frac(float(np.abs(w).max()), w_width, True))
    bias = Fmt(b_width, auto_frac(float(np.abs(b).max()), b_width, True))
    assert act.frac == 6 and bias.frac == 12
    x = np.vstack([calib, X_ROWS * 4.0, [[-50.0, 50.0, 1e-3, -1e-3]]]).astype(np.float32)
    expected = reference(x, w, b, act=act, weight=weight, bias=bias, relu_in=relu)
    np.testing.assert_array_equal(stored_input(quantized, 0).frac, act.frac)
    assert_stored(quantized, expected, weight)
    assert_bit_exact(quantized, x, expected)


# ---------------------------------------------------------------------------------------
# Accumulators beyond 2**24: where float32 rounding enters, and how much.


def _float32_dot_bound(expected: Expected, k: int) -> np.ndarray:
    """Rigorous error bound of a float32 dot product of ``k`` terms plus a bias.

    Each of the ``k`` products and ``k`` additions rounds with relative error at most
    ``u = 2**-24``, so ``|fl(sum) - sum| <= gamma_{k+1} * sum(|terms|)`` in any summation
    order (``gamma_n = n u / (1 - n u)``), converted here from accumulator steps to values.
    """
    u = 2.0**-24
    gamma = (k + 1) * u / (1 - (k + 1) * u)
    return gamma * expected.bound * 2.0**-expected.acc_frac


@pytest.mark.parametrize(
    ("width", "k", "rep"), [(8, 4096, "int8"), (8, 4096, "uint8"), (16, 4, "auto")]
)
def test_accumulators_beyond_float32_integers(width, k, rep, tmp_path):
    """Saturated extremes and ties in long (8-bit) or wide (16-bit) dot products.

    * 8-bit at ORT_ENABLE_ALL runs QGemm: the int32 accumulator is exact and converted to
      float32 once (then scaled by a power of two, exactly), so the output is bit-exactly
      the float32 rounding of the exact value: within half a float32 ulp of it.
    * The float Gemm (ORT_DISABLE_ALL, and every level for 16-bit containers) rounds each
      product and partial sum in float32; beyond 2**24 accumulator steps only the float32
      dot-product error bound holds. For the short 16-bit products that bound is a small
      fraction of what a one-step error in a single quantized x or w would change (so the
      check still sees any quantization error); for 4096 8-bit terms it is not, but those
      integers are checked exactly by the fused run.
    """
    rng = np.random.default_rng(width)
    act, weight = Fmt(width, width - 3), Fmt(width, width - 3)
    bias = Fmt(16, 8)
    lo, hi = act.bounds
    x_units = rng.choice([lo - 5.0, hi + 5.0, lo, hi, hi - 0.5, lo + 0.5], (4, k))
    w_units = rng.choice([lo - 5.0, hi + 5.0, lo, hi], (3, k))
    w_units[1] = np.where(x_units[0] > 0, hi, lo)  # the largest possible accumulator
    x = (x_units * 2.0**-act.frac).astype(np.float32)
    w = w_units * 2.0**-weight.frac
    b = np.array([1.5, -0.25, 3.0])
    quantized = quantize_with_config(
        gemm_model(w, b), target_cpu=TARGETS.get(rep, "auto"), weight_width=width,
        weight_frac_width=weight.frac, bias_width=16, bias_frac_width=bias.frac,
        data_in_width=width, data_in_frac_width=act.frac,
    )  # fmt: skip
    expected = reference(x, w, b, act=act, weight=weight, bias=bias)
    assert expected.bound.max() > 2 * FLOAT32_INTEGERS  # beyond exact float32 integers
    assert_stored(quantized, expected, weight)
    tolerance = _float32_dot_bound(expected, k)
    if width == 16:  # every |w int| is lo or hi: one x step moves y by >= hi steps
        assert tolerance.max() < 0.1 * hi * 2.0**-expected.acc_frac
    fused = runs_qgemm(quantized, tmp_path)
    assert fused == (width == 8)
    for level in LEVELS:
        got = run(quantized, x, level).astype(np.float64)
        if fused and level == FUSED and not fused_exact(rep):
            assert not np.array_equal(got, expected.y.astype(np.float32))  # saturated
        elif fused and level == FUSED:
            np.testing.assert_array_equal(got, expected.y.astype(np.float32))
        else:
            assert np.all(np.abs(got - expected.y) <= tolerance), level.name


# ---------------------------------------------------------------------------------------
# target_cpu = "auto": exact on the CPU the tests run on, whichever it is.


def test_auto_target_is_exact_on_this_cpu(tmp_path):
    """Full-range 8-bit weights against all-255 inputs: the codes that saturate u8s8.

    "auto" must store them so that this CPU's fused kernel is exact: int8 where u8s8 is
    exact, uint8 around 128 where it saturates (decided by this file's own probe).
    """
    act, weight, bias = Fmt(8, 0, False), Fmt(8, 0), Fmt(16, 0)
    w = np.tile([[-128.0, 127.0, -128.0, 127.0]], (2, 2))  # (2, 8)
    w[1] *= -1
    w[1, 0] = 127.0
    b = np.array([0.0, 1.0])
    x = np.full((3, 8), 255.0, np.float32)
    x[1, ::2] = 0.0
    quantized = quantize_with_config(
        gemm_model(w, b, relu_in=True), weight_width=8, weight_frac_width=0, bias_width=16,
        bias_frac_width=0, data_in_width=8, data_in_frac_width=0,
    )  # fmt: skip
    expected = reference(x, w, b, act=act, weight=weight, bias=bias, relu_in=True)
    stored = assert_stored(quantized, expected, weight)
    assert stored.data_type == ("UINT8" if u8s8_saturates_here() else "INT8")
    assert runs_qgemm(quantized, tmp_path)
    assert_bit_exact(quantized, x, expected)
