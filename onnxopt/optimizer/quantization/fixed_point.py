"""Fixed-point arithmetic reference in numpy: the numerics every QDQ graph must reproduce.

A fixed-point tensor of width ``w`` and fraction ``f`` holds
``clamp(round_half_to_even(x * 2**f), lo, hi) * 2**-f`` with ``[lo, hi]`` the signed
two's-complement range ``[-2**(w-1), 2**(w-1) - 1]`` or the unsigned range
``[0, 2**w - 1]``. That is QuantizeLinear/DequantizeLinear with scale ``2**-f``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MIN_WIDTH = 2
MAX_WIDTH = 16
# |frac| beyond this would push accumulator scales 2**-(f_in + f_w) towards float32 denormals.
FRAC_LIMIT = 32

FracLike = int | npt.ArrayLike


def int_range(width: int, signed: bool) -> tuple[int, int]:
    """The integer range ``(lo, hi)`` of a ``width``-bit signed or unsigned value."""
    if signed:
        return -(2 ** (width - 1)), 2 ** (width - 1) - 1
    return 0, 2**width - 1


def scale_of(frac: int) -> float:
    """The quantization scale ``2**-frac`` of a fraction width."""
    return float(np.ldexp(1.0, -int(frac)))


def _frac_for_broadcast(frac: FracLike, ndim: int, axis: int | None) -> np.ndarray:
    """``frac`` as an int array shaped to broadcast against an ``ndim``-d tensor."""
    fracs = np.asarray(frac, dtype=np.int64)
    if fracs.ndim == 0:
        return fracs
    if fracs.ndim != 1 or axis is None:
        raise ValueError("a vector of fractions needs a 1-D frac and the channel axis")
    shape = [1] * ndim
    shape[axis] = fracs.shape[0]
    return fracs.reshape(shape)


def quantize_fixed(
    x: npt.ArrayLike,
    width: int,
    frac: FracLike,
    signed: bool = True,
    *,
    axis: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantize ``x`` to fixed point with round-half-to-even and saturation.

    Args:
        x: Finite real values.
        width: Total bits, sign included for signed values.
        frac: Fraction bits (may be negative or exceed ``width``); a 1-D sequence gives one
            fraction per channel along ``axis``.
        signed: Two's-complement range when True, ``[0, 2**width - 1]`` when False.
        axis: The channel axis when ``frac`` is a vector.

    Returns:
        ``(ints, dequantized)``: the integers as int64 and their real values
        ``ints * 2**-frac`` as float64 (exact: powers of two only shift exponents).
    """
    values = np.asarray(x, dtype=np.float64)
    fracs = _frac_for_broadcast(frac, values.ndim, axis)
    lo, hi = int_range(width, signed)
    # ldexp scales by 2**frac exactly; np.rint rounds half to even.
    ints = np.clip(np.rint(np.ldexp(values, fracs)), lo, hi).astype(np.int64)
    return ints, np.ldexp(ints.astype(np.float64), -fracs)


def _frac_for_scalar(max_abs: float, width: int, signed: bool) -> int:
    hi = int_range(width, signed)[1]
    if not max_abs > 0.0:
        return min(width - int(signed), FRAC_LIMIT)
    frac = int(np.floor(np.log2(hi / max_abs)))
    # log2 may be off by one ulp near powers of two: settle on the exact boundary.
    while np.ldexp(float(hi), -frac) < max_abs:
        frac -= 1
    while np.ldexp(float(hi), -(frac + 1)) >= max_abs:
        frac += 1
    return int(np.clip(frac, -FRAC_LIMIT, FRAC_LIMIT))


def frac_for_range(max_abs: npt.ArrayLike, width: int, signed: bool = True) -> int | np.ndarray:
    """The fraction that covers ``[-max_abs, max_abs]`` with the fewest integer bits.

    This is the largest ``f`` with ``max_abs <= hi * 2**-f`` (``hi`` the largest integer
    of the width), so nothing in range saturates; it is onnxopt's "auto" fraction. An
    all-zero range gets zero integer bits. Results are clamped to ``+-FRAC_LIMIT``.

    Args:
        max_abs: The largest magnitude to represent; a vector gives one fraction each
            (per-channel).
        width: Total bits.
        signed: Whether the range is signed.

    Returns:
        An ``int`` for a scalar ``max_abs``, else an int64 array of the same shape.
    """
    values = np.asarray(max_abs, dtype=np.float64)
    if values.ndim == 0:
        return _frac_for_scalar(float(values), width, signed)
    fracs = [_frac_for_scalar(float(v), width, signed) for v in values.ravel()]
    return np.asarray(fracs, dtype=np.int64).reshape(values.shape)


def na_frac(width: int) -> int:
    """The lab's "NA" fraction: half the bits for the fraction, ``width // 2``."""
    return width // 2


def frac_for_mse(
    x: npt.ArrayLike, width: int, signed: bool = True, *, axis: int | None = None
) -> int | np.ndarray:
    """The fraction (one per channel along ``axis``) with the smallest squared rounding plus
    saturation error: the range fraction :func:`frac_for_range` or one finer (a finer grid
    that saturates a few outliers often loses less than the coarse one rounds away).

    Ties keep the range fraction. Returns an ``int`` without ``axis``, else an int64 vector.
    """
    values = np.asarray(x, dtype=np.float64)
    other = tuple(i for i in range(values.ndim) if i != axis) if axis is not None else None
    max_abs = np.max(np.abs(values), axis=other, initial=0.0)
    base = np.asarray(frac_for_range(max_abs, width, signed))
    errors = []
    for frac in (base, np.minimum(base + 1, FRAC_LIMIT)):
        per = frac if axis is not None else int(frac)
        _, deq = quantize_fixed(values, width, per, signed, axis=axis)
        errors.append(np.sum((deq - values) ** 2, axis=other))
    best = np.where(errors[1] < errors[0], np.minimum(base + 1, FRAC_LIMIT), base)
    return best.astype(np.int64) if axis is not None else int(best)
