"""onnxruntime runs the pass's own Q(->Clip)->DQ bit-exactly like the numpy reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from qdq_helpers import count_ops, run

from onnxopt.optimizer.quantization import Container, int_range, na_frac, quantize_fixed
from onnxopt.optimizer.quantization.qdq_nodes import ActivationQuant, fake_quant_model

LEVELS = [ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL]


def _inputs(width: int, frac: int, signed: bool) -> np.ndarray:
    """Every half and quarter LSB across the range and 3 LSB beyond, plus extremes."""
    lo, hi = int_range(width, signed)
    steps = np.arange(4 * (lo - 3), 4 * (hi + 3) + 1) / 4.0  # includes all .5 ties
    extremes = np.array([0.0, -0.0, 1e6, -1e6, 3e38, -3e38])
    return np.concatenate([np.ldexp(steps, -frac), extremes]).astype(np.float32)


def _assert_bit_exact(aq: ActivationQuant) -> None:
    model = fake_quant_model(aq)
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    x = _inputs(aq.width, aq.frac, aq.signed)
    expected = quantize_fixed(x, aq.width, aq.frac, aq.signed)[1].astype(np.float32)
    for level in LEVELS:
        got = run(model, x, level)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("width", range(2, 17))
def test_default_containers_are_bit_exact(width, signed):
    container = Container.UINT8 if width <= 8 else Container(f"{'' if signed else 'u'}int16")
    for frac in (na_frac(width), 0, width + 3, -2):
        _assert_bit_exact(ActivationQuant(width, frac, signed, container))


@pytest.mark.parametrize(
    ("width", "signed", "container"),
    [
        (4, True, Container.INT8),
        (8, True, Container.INT8),
        (7, False, Container.INT8),
        (12, True, Container.UINT16),
        (16, True, Container.UINT16),
        (15, False, Container.INT16),
    ],
)
def test_explicit_containers_are_bit_exact(width, signed, container):
    _assert_bit_exact(ActivationQuant(width, na_frac(width), signed, container))


@pytest.mark.parametrize(
    ("width", "container", "ops"),
    [
        (8, Container.UINT8, {"QuantizeLinear": 1, "DequantizeLinear": 1}),
        (5, Container.UINT8, {"QuantizeLinear": 1, "Clip": 1, "DequantizeLinear": 1}),
        (16, Container.INT16, {"QuantizeLinear": 1, "DequantizeLinear": 1}),
        (12, Container.INT16, {"Clip": 1, "QuantizeLinear": 1, "DequantizeLinear": 1}),
    ],
)
def test_clip_only_where_the_width_is_narrower_than_the_container(width, container, ops):
    model = fake_quant_model(ActivationQuant(width, 2, True, container))
    assert count_ops(model) == ops
    first = model.graph.node[0].op_type
    # 8-bit containers clip the codes (Q -> Clip -> DQ), 16-bit ones the floats (Clip -> Q).
    assert first == ("Clip" if width == 12 else "QuantizeLinear")


def test_signed_8bit_values_sit_in_uint8_with_zero_point_128_and_clip_bounds():
    model = fake_quant_model(ActivationQuant(3, 1, True, Container.UINT8))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    assert inits["x_zero_point"] == 128 and inits["x_zero_point"].dtype == np.uint8
    assert (inits["x_clip_lo"], inits["x_clip_hi"]) == (124, 131)
