"""Golden hand-computed cases and properties of the numpy fixed-point reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxopt.optimizer.quantization import frac_for_range, int_range, na_frac, quantize_fixed


@pytest.mark.parametrize(
    ("width", "signed", "expected"),
    [(2, True, (-2, 1)), (2, False, (0, 3)), (8, True, (-128, 127)), (16, False, (0, 65535))],
)
def test_int_range(width, signed, expected):
    assert int_range(width, signed) == expected


@pytest.mark.parametrize(
    ("x", "width", "frac", "signed", "ints"),
    [
        # ties go to the even integer: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, and symmetrically
        ([0.5, 1.5, 2.5, -0.5, -1.5, -2.5], 8, 0, True, [0, 2, 2, 0, -2, -2]),
        # LSB 0.25: 0.125 and 0.625 are ties (0.5 and 2.5 LSB), 0.375 is 1.5 LSB
        ([0.125, 0.375, 0.625, -0.375], 8, 2, True, [0, 2, 2, -2]),
        # negative frac: LSB 4; 6 is 1.5 LSB -> 2, 10 is 2.5 LSB -> 2
        ([6.0, 10.0, -2.0], 8, -2, True, [2, 2, 0]),
        # saturation, signed 4-bit frac 1: ints in [-8, 7]; 3.75 is 7.5 LSB -> 8 -> 7
        ([100.0, -100.0, 3.75, -4.25, 3.25], 4, 1, True, [7, -8, 7, -8, 6]),
        # unsigned 4-bit: negatives clamp to 0, 15.5 -> 16 -> 15, 14.5 -> 14
        ([-3.0, 15.5, 14.5, 0.5, 1.5], 4, 0, False, [0, 15, 14, 0, 2]),
        # 2-bit signed: [-2, 1]
        ([1.5, -2.5, 0.75, -1.25], 2, 0, True, [1, -2, 1, -1]),
        # 2-bit unsigned: [0, 3]
        ([3.5, 2.5, -0.1], 2, 0, False, [3, 2, 0]),
        # 16-bit signed frac 8: largest value 32767 / 256
        ([127.998, -128.5, 0.001953125], 16, 8, True, [32767, -32768, 0]),
        # 16-bit unsigned frac 0: 65535.5 -> 65536 -> saturates; 65534.5 -> 65534
        ([65535.5, 65534.5, 70000.0], 16, 0, False, [65535, 65534, 65535]),
    ],
)
def test_quantize_fixed_golden(x, width, frac, signed, ints):
    got_ints, got_values = quantize_fixed(x, width, frac, signed)
    np.testing.assert_array_equal(got_ints, ints)
    np.testing.assert_array_equal(got_values, np.array(ints, dtype=np.float64) * 2.0**-frac)


def test_quantize_fixed_per_channel_fracs():
    x = np.array([[0.3, 0.3], [0.3, 0.3], [5.0, -5.0]])
    ints, values = quantize_fixed(x, 8, [4, 2, 0], True, axis=0)
    np.testing.assert_array_equal(ints, [[5, 5], [1, 1], [5, -5]])
    np.testing.assert_array_equal(values, [[0.3125, 0.3125], [0.25, 0.25], [5.0, -5.0]])


@pytest.mark.parametrize(
    ("max_abs", "width", "signed", "frac"),
    [
        (1.0, 8, True, 6),  # 127/128 < 1.0 <= 127/64
        (0.99, 8, True, 7),
        (127.0, 8, True, 0),
        (128.0, 8, True, -1),
        (255.0, 8, False, 0),
        (3.0, 4, True, 1),  # 7/2 covers 3, 7/4 does not
        (0.0, 8, True, 7),  # nothing to cover: no integer bits
        (1e-30, 8, True, 32),  # clamped to FRAC_LIMIT
    ],
)
def test_frac_for_range_golden(max_abs, width, signed, frac):
    assert frac_for_range(max_abs, width, signed) == frac


def test_frac_for_range_is_largest_covering_frac_per_channel():
    max_abs = np.array([0.1, 1.0, 7.9, 100.0])
    fracs = frac_for_range(max_abs, 8, True)
    hi = 127
    assert np.all(hi * 2.0**-fracs >= max_abs)
    assert np.all(hi * 2.0 ** -(fracs + 1) < max_abs)


@pytest.mark.parametrize(("width", "frac"), [(2, 1), (5, 2), (8, 4), (16, 8)])
def test_na_frac_is_half_the_width(width, frac):
    assert na_frac(width) == frac


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(2, 16),
    frac=st.integers(-8, 24),
    signed=st.booleans(),
    position=st.floats(0.0, 1.0),
)
def test_round_trip_error_is_at_most_half_an_lsb(width, frac, signed, position):
    lo, hi = int_range(width, signed)
    scale = 2.0**-frac
    x = (lo + position * (hi - lo)) * scale
    _, value = quantize_fixed(x, width, frac, signed)
    assert abs(value - x) <= scale / 2


@settings(max_examples=100, deadline=None)
@given(width=st.integers(2, 16), frac=st.integers(-8, 24), signed=st.booleans())
def test_dequantized_values_are_fixed_points(width, frac, signed):
    x = np.linspace(-1e5, 1e5, 101)
    ints, values = quantize_fixed(x, width, frac, signed)
    lo, hi = int_range(width, signed)
    assert ints.min() >= lo and ints.max() <= hi
    np.testing.assert_array_equal(quantize_fixed(values, width, frac, signed)[1], values)
