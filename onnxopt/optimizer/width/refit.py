"""Closed-form ridge refits of a consumer's weights on calibration activations (numpy).

After a group shrinks, a consumer sees fewer input channels. Its new weights ``W`` and bias
``b`` minimise ``||X W + b - Y||^2 + lambda ||W||^2`` where ``X`` are the consumer's inputs
in the shrunk model (its own activations, fed forward layer by layer) and ``Y`` the
original outputs of the consumer's kept units. ``lambda = ridge * trace(G) / d`` with ``G``
the centred Gram matrix, so the penalty is relative to the mean activation energy; it
makes the problem well posed when there are more unknowns than calibration samples. The
bias is fitted but not penalised (the data are centred).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from onnxopt.errors import RewriteError
from onnxopt.optimizer.width.groups import WeightNode

CHUNK_ELEMENTS = 1 << 22
"""Rows x columns per accumulated block, which bounds memory for Conv patch matrices."""

BLAS_THREADS = 1
"""BLAS threads for refits. The systems are small (a few hundred to a few thousand unknowns)
and a search runs trials side by side: on a busy 2-core machine one thread was 10-100x
faster than OpenBLAS's default pool (a 513-unknown solve: 0.03 s instead of 0.3-0.9 s)."""


@dataclass(frozen=True)
class Fit:
    """A refit: ``y ~ x @ weight + bias`` with the ridge strength used and the fit quality.

    Attributes:
        weight: ``(inputs, outputs)`` matrix (patch-major for Conv).
        bias: ``(outputs,)``.
        ridge_lambda: The absolute penalty used.
        samples: Rows fitted (samples x output positions for Conv).
        relative_error: Residual energy over the energy of the centred targets, on the data.
    """

    weight: np.ndarray
    bias: np.ndarray
    ridge_lambda: float
    samples: int
    relative_error: float


class Gram:
    """Running sums for a least-squares fit, accumulated in float64 block by block."""

    def __init__(self, d: int, m: int) -> None:
        self.n = 0
        self.sx, self.sy = np.zeros(d), np.zeros(m)
        self.xx, self.xy = np.zeros((d, d)), np.zeros((d, m))
        self.yy = 0.0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add rows ``x (r, d)`` with targets ``y (r, m)``."""
        x, y = x.astype(np.float64, copy=False), y.astype(np.float64, copy=False)
        self.n += len(x)
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.yy += float(np.einsum("ij,ij->", y, y))

    def solve(self, ridge: float, intercept: bool) -> Fit:
        """The ridge solution; centred (and the bias fitted) when ``intercept``."""
        if self.n == 0:
            raise RewriteError("a refit needs calibration samples; none were given")
        mx, my = (self.sx / self.n, self.sy / self.n) if intercept else (0 * self.sx, 0 * self.sy)
        g = self.xx - self.n * np.outer(mx, mx)
        h = self.xy - self.n * np.outer(mx, my)
        yy = self.yy - self.n * float(my @ my)
        lam = ridge * max(float(np.trace(g)), 1e-30) / len(g)
        try:
            w = np.linalg.solve(g + lam * np.eye(len(g)), h)
        except np.linalg.LinAlgError:
            w = np.linalg.lstsq(g + lam * np.eye(len(g)), h, rcond=None)[0]
        resid = yy - 2 * float(np.sum(w * h)) + float(np.sum(w * (g @ w)))
        rel = max(resid, 0.0) / yy if yy > 0 else 0.0
        return Fit(w, my - mx @ w, lam, self.n, rel)


def fit_consumer(
    node: WeightNode, x: np.ndarray, y: np.ndarray, *, ridge: float, intercept: bool
) -> Fit:
    """Fit a consumer's weights from its inputs ``x`` and target outputs ``y`` (per sample)."""
    from threadpoolctl import threadpool_limits

    rows = _conv_rows(node, x, y) if node.op_type == "Conv" else _dense_rows(x, y)
    gram = None
    with threadpool_limits(BLAS_THREADS, user_api="blas"):
        for xr, yr in rows:
            if gram is None:
                gram = Gram(xr.shape[1], yr.shape[1])
            gram.add(xr, yr)
        if gram is None:
            raise RewriteError(f"no calibration rows for {node.name!r}")
        return gram.solve(ridge, intercept)


def _dense_rows(x: np.ndarray, y: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    x2, y2 = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    step = max(1, CHUNK_ELEMENTS // max(x2.shape[1], 1))
    for start in range(0, len(x2), step):
        yield x2[start : start + step], y2[start : start + step]


def _conv_rows(node: WeightNode, x: np.ndarray, y: np.ndarray) -> Iterator[tuple]:
    kernel = node.attrs["kernel_shape"]
    per_sample = int(np.prod(y.shape[2:])) * x.shape[1] * int(np.prod(kernel))
    step = max(1, CHUNK_ELEMENTS // max(per_sample, 1))
    for start in range(0, len(x), step):
        patches = im2col(x[start : start + step], node.attrs, tuple(y.shape[2:]))
        yield patches, np.moveaxis(y[start : start + step], 1, -1).reshape(-1, y.shape[1])


def im2col(x: np.ndarray, attrs, out_spatial: tuple[int, ...]) -> np.ndarray:
    """Conv input patches as rows: ``(N, C, *S)`` -> ``(N * prod(out), C * prod(kernel))``.

    Columns are ordered as a Conv weight ``(M, C, *kernel)`` flattened per output channel.
    """
    kernel, strides, dilations = attrs["kernel_shape"], attrs["strides"], attrs["dilations"]
    nd = len(kernel)
    window = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    begin, end = _pads(attrs, x.shape[2:], window)
    xp = np.pad(x, [(0, 0), (0, 0), *zip(begin, end, strict=True)])
    view = np.lib.stride_tricks.sliding_window_view(xp, window, axis=tuple(range(2, 2 + nd)))
    positions = tuple(slice(0, o * s, s) for o, s in zip(out_spatial, strides, strict=True))
    taps = tuple(slice(None, None, d) for d in dilations)
    view = view[(slice(None), slice(None), *positions, *taps)]
    view = np.moveaxis(view, 1, 1 + nd)
    return view.reshape(len(x) * int(np.prod(out_spatial)), -1)


def _pads(attrs, spatial, window) -> tuple[list[int], list[int]]:
    nd = len(window)
    auto = attrs["auto_pad"]
    if auto in ("NOTSET", ""):
        pads = list(attrs["pads"])
        return pads[:nd], pads[nd:]
    if auto == "VALID":
        return [0] * nd, [0] * nd
    total = [
        max((-(-n // s) - 1) * s + w - n, 0)
        for n, s, w in zip(spatial, attrs["strides"], window, strict=True)
    ]
    small = [t // 2 for t in total]
    big = [t - t // 2 for t in total]
    return (small, big) if auto == "SAME_UPPER" else (big, small)


def weights_from_fit(node: WeightNode, fit: Fit, old: np.ndarray) -> np.ndarray:
    """The fitted weight in the node's own layout and dtype (``old`` gives both)."""
    w = fit.weight.T  # (outputs, inputs)
    if node.op_type == "Conv":
        w = w.reshape(w.shape[0], -1, *old.shape[2:])
    elif node.op_type == "MatMul" or node.out_axis == 1:
        w = w.T
    if node.op_type == "Gemm":
        w = w / node.attrs["alpha"]
    return w.astype(old.dtype)
