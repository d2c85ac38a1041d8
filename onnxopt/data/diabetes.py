"""scikit-learn's bundled diabetes data: 442 patients, 10 features, one regression target.

Split: random 70/15/15 train/validation/test with ``random_state=0``; features and target
standardized with the training split's mean and standard deviation (the target's are kept
in ``notes`` and ``preprocessing``, so predictions can be mapped back to disease progression
units); the calibration subset is the whole training split (309 samples).
"""

from __future__ import annotations

import numpy as np

from onnxopt.data.dataset import Dataset, Split

SPLIT_SEED = 0


def load_diabetes() -> Dataset:
    """The bundled diabetes regression dataset with onnxopt's fixed split."""
    from sklearn.datasets import load_diabetes as sk_load_diabetes
    from sklearn.model_selection import train_test_split

    bunch = sk_load_diabetes(scaled=False)
    x, y = bunch.data.astype(np.float64), bunch.target.astype(np.float64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.15, random_state=SPLIT_SEED)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.15 / 0.85, random_state=SPLIT_SEED
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    y_mean, y_std = float(y_train.mean()), float(y_train.std())

    def split(xs: np.ndarray, ys: np.ndarray) -> Split:
        return Split(
            ((xs - mean) / std).astype(np.float32), ((ys - y_mean) / y_std).astype(np.float32)
        )

    train = split(x_train, y_train)
    return Dataset(
        name="diabetes",
        train=train,
        val=split(x_val, y_val),
        test=split(x_test, y_test),
        calibration=train,
        num_classes=None,
        source="sklearn.datasets.load_diabetes",
        notes={"target": f"standardized: (progression - {y_mean:.3f}) / {y_std:.3f}"},
        preprocessing=({"op": "standardize", "mean": mean.tolist(), "std": std.tolist()},),
    )
