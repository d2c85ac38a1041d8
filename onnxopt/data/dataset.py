"""The in-memory dataset every stage after loading works on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxopt.errors import DataError

MAX_CLASSES = 65_536
"""Labels are class indices below this. The class count is the largest label + 1, and counts,
one-hot targets and score columns are allocated per class: a stray 2**40 must be refused,
not allocated (8 TiB). 65,536 is three times ImageNet-21k's 21,841 classes."""


@dataclass(frozen=True)
class Split:
    """Features ``x`` (float32, shape ``(n, *feature_shape)``) and integer labels ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(
                f"{len(self.x)} samples but {len(self.y)} labels; give one label per sample"
            )

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """A classification dataset split into train / validation / test plus a calibration subset.

    ``calibration`` is drawn from the training split (never from validation or test), so
    statistics used to quantize a model never see the data it is judged on.
    """

    name: str
    train: Split
    val: Split
    test: Split
    calibration: Split
    num_classes: int
    class_names: tuple[str, ...] = ()
    source: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    preprocessing: tuple[dict[str, Any], ...] = ()
    """How raw samples become the features the model is fed, as plain-JSON steps (what a
    deployment must do before calling the model): e.g. ``{"op": "divide", "by": 16.0}``,
    ``{"op": "standardize", "mean": [...], "std": [...]}``. Empty: fed as stored."""

    @property
    def num_features(self) -> int:
        return int(np.prod(self.train.x.shape[1:]))

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.train.x.shape[1:])

    def split(self, name: str) -> Split:
        """One split by name: ``train``, ``val``, ``test`` or ``calibration``."""
        splits = {
            "train": self.train,
            "val": self.val,
            "test": self.test,
            "calibration": self.calibration,
        }
        if name not in splits:
            raise DataError(f"unknown split {name!r}; use one of {', '.join(splits)}")
        return splits[name]

    def fingerprint(self) -> str:
        """SHA-256 over every split's bytes: workers compare it so they never mix data."""
        digest = hashlib.sha256()
        for part in (self.train, self.val, self.test, self.calibration):
            digest.update(np.ascontiguousarray(part.x).tobytes())
            digest.update(np.ascontiguousarray(part.y).tobytes())
        return digest.hexdigest()


def stratified_split(
    x: np.ndarray,
    y: np.ndarray,
    *,
    fractions: tuple[float, float, float],
    seed: int,
) -> tuple[Split, Split, Split]:
    """Split into train / validation / test with class proportions kept (scikit-learn)."""
    from sklearn.model_selection import train_test_split

    f_train, f_val, f_test = fractions
    if abs(f_train + f_val + f_test - 1.0) > 1e-9:
        raise DataError(f"split fractions {fractions} must add up to 1")
    strat = y if np.bincount(y).min() >= 2 else None
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=f_test, random_state=seed, stratify=strat
    )
    strat_rest = y_rest if strat is not None and np.bincount(y_rest).min() >= 2 else None
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=f_val / (f_train + f_val), random_state=seed, stratify=strat_rest
    )
    return Split(x_train, y_train), Split(x_val, y_val), Split(x_test, y_test)


def calibration_subset(train: Split, size: int, seed: int) -> Split:
    """A fixed, seeded subset of the training split used for calibration and refits."""
    n = min(size, len(train))
    idx = np.sort(np.random.default_rng(seed).permutation(len(train))[:n])
    return Split(train.x[idx], train.y[idx])


def check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise features/labels: float32 features, int64 labels 0..K-1, finite."""
    if np.iscomplexobj(x):
        raise DataError(
            f"{where}: features are complex ({np.asarray(x).dtype}); onnxopt feeds real numbers: "
            "store the real and imaginary parts as separate features"
        )
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{where}: features are not numeric ({exc}); convert them to numbers"
        ) from None
    if x.ndim < 2:
        raise DataError(f"{where}: features must have shape (samples, features), got {x.shape}")
    if not np.isfinite(x).all():
        raise DataError(f"{where}: {_non_finite(x)}; clean or drop them")
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be one integer per sample, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} samples but {len(y)} labels; give one label per sample")
    integral = np.issubdtype(y.dtype, np.integer)
    if not integral and not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
        raise DataError(
            f"{where}: labels must be integers 0..K-1, got dtype {y.dtype} with non-integer "
            "values; store one class index per sample"
        )
    if len(y) and y.max() >= MAX_CLASSES:  # before anything allocates one slot per class
        raise DataError(
            f"{where}: label {int(y.max()):,} is not a class index: labels must be 0..K-1 "
            f"with fewer than {MAX_CLASSES:,} classes; map the labels to 0..K-1"
        )
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise DataError(
            f"{where}: labels must be integers 0..K-1, found {int(y.min())}; "
            "shift them to start at 0"
        )
    return x, y


def _non_finite(x: np.ndarray) -> str:
    """How many samples hold NaN or Inf, and in which (flattened) feature columns."""
    bad = ~np.isfinite(x.reshape(len(x), -1))
    columns = [str(c) for c in np.flatnonzero(bad.any(axis=0))]
    more = f" and {len(columns) - 6} more" if len(columns) > 6 else ""
    where = f"feature column{'s' if len(columns) > 1 else ''} {', '.join(columns[:6])}{more}"
    return f"{int(bad.any(axis=1).sum())} samples contain NaN or Inf (in {where})"
