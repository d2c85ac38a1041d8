"""scikit-learn's bundled digits: 1,797 real 8x8 handwritten digits, 10 classes, offline.

Split (documented in the README): pixels scaled from 0..16 to 0..1; stratified
60/20/20 train/validation/test with ``random_state=0``; the calibration subset is 256
training samples drawn with seed 0. Features are flat (64,); models with image inputs
(N, 1, 8, 8) get them reshaped by the evaluator.
"""

from __future__ import annotations

import numpy as np

from onnxopt.data.dataset import Dataset, calibration_subset, stratified_split

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0
CALIBRATION_SIZE = 256


def load_digits() -> Dataset:
    """The bundled digits dataset with onnxopt's fixed split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    train, val, test = stratified_split(x, y, fractions=SPLIT_FRACTIONS, seed=SPLIT_SEED)
    return Dataset(
        name="digits",
        train=train,
        val=val,
        test=test,
        calibration=calibration_subset(train, CALIBRATION_SIZE, SPLIT_SEED),
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        source="sklearn.datasets.load_digits",
    )
