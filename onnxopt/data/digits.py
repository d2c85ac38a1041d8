"""scikit-learn's bundled digits: 1,797 real 8x8 handwritten digits, 10 classes, offline.

Split (documented in the README): pixels scaled from 0..16 to 0..1; stratified
60/20/20 train/validation/test with ``random_state=0``; the calibration subset is 256
training samples drawn with seed 0. Features are flat (64,); models with image inputs
(N, 1, 8, 8) get them reshaped by the evaluator.

The split's indices ship with the package (``digits_split.npz``, made by
:func:`~onnxopt.data.dataset.stratified_split`; a test recomputes them) and the pixels are
read from scikit-learn's bundled ``digits.csv.gz`` the way ``load_digits`` reads it. Importing
scikit-learn costs about a second and a half, which a search that starts from an ONNX file
would otherwise spend before its first trial.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from onnxopt.data.dataset import Dataset, Split, calibration_subset

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0
CALIBRATION_SIZE = 256
SPLIT_FILE = Path(__file__).with_name("digits_split.npz")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits pixels (0..16) and targets, without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1], data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load_digits  # another layout: ask sklearn

    bunch = sk_load_digits()
    return bunch.data, bunch.target


def load_digits() -> Dataset:
    """The bundled digits dataset with onnxopt's fixed split."""
    pixels, target = digits_arrays()
    x = (pixels / 16.0).astype(np.float32)
    y = target.astype(np.int64)
    with np.load(SPLIT_FILE, allow_pickle=False) as idx:
        train, val, test = (Split(x[idx[k]], y[idx[k]]) for k in ("train", "val", "test"))
    return Dataset(
        name="digits",
        train=train,
        val=val,
        test=test,
        calibration=calibration_subset(train, CALIBRATION_SIZE, SPLIT_SEED),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        source="sklearn.datasets.load_digits",
        preprocessing=(
            {"op": "flatten", "shape": [64], "note": "8x8 pixels, row by row"},
            {"op": "divide", "by": 16.0, "note": "pixel intensities 0..16 -> 0..1"},
        ),
    )
