"""The in-memory dataset every stage after loading works on."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxopt.errors import DataError

MAX_CLASSES = 65_536
"""Labels are class indices below this. The class count is the largest label + 1, and counts,
one-hot targets and score columns are allocated per class: a stray 2**40 must be refused,
not allocated (8 TiB). 65,536 is three times ImageNet-21k's 21,841 classes."""


Features = np.ndarray | Mapping[str, np.ndarray]
"""One array of features, or one array per named model input (``{"ids": ..., "mask": ...}``)."""


@dataclass(frozen=True)
class Split:
    """Features ``x`` and targets ``y`` of one split.

    ``x`` is one array ``(n, *feature_shape)`` (float32), or a mapping from model input names
    to arrays of ``n`` rows each (integer inputs such as token ids keep their dtype). ``y`` is
    ``n`` integer class labels, float targets ``(n,)`` or ``(n, d)`` for regression, or None
    for data without labels (fidelity metrics against a reference model need none).
    """

    x: Features
    y: np.ndarray | None = None

    def __post_init__(self) -> None:
        lengths = {name: len(a) for name, a in self.arrays().items()}
        if len(set(lengths.values())) > 1:
            raise DataError(
                f"inputs have different sample counts {lengths}; give every input one row "
                "per sample"
            )
        if self.y is not None and len(self.y) != len(self):
            raise DataError(
                f"{len(self)} samples but {len(self.y)} labels; give one label per sample"
            )

    def arrays(self) -> dict[str, np.ndarray]:
        """The feature arrays by input name (``"x"`` for one unnamed array)."""
        return dict(self.x) if isinstance(self.x, Mapping) else {"x": self.x}

    def array(self) -> np.ndarray:
        """The single unnamed feature array.

        Raises:
            DataError: The features are several named inputs.
        """
        if isinstance(self.x, Mapping):
            raise DataError("the data have several named inputs, not one feature array")
        return self.x

    @property
    def named(self) -> bool:
        """Whether the features are named after model inputs (several inputs)."""
        return isinstance(self.x, Mapping)

    def __len__(self) -> int:
        return len(next(iter(self.arrays().values())))

    def take(self, index: np.ndarray) -> Split:
        """The rows ``index`` of every array."""
        x: Features = (
            {k: v[index] for k, v in self.x.items()} if isinstance(self.x, Mapping)
            else self.x[index]
        )  # fmt: skip
        return Split(x, None if self.y is None else self.y[index])


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
    num_classes: int | None
    """The class count for class labels (None for regression targets or no labels)."""
    class_names: tuple[str, ...] = ()
    source: str = ""
    notes: dict[str, str] = field(default_factory=dict)
    preprocessing: tuple[dict[str, Any], ...] = ()
    """How raw samples become the features the model is fed, as plain-JSON steps (what a
    deployment must do before calling the model): e.g. ``{"op": "divide", "by": 16.0}``,
    ``{"op": "standardize", "mean": [...], "std": [...]}``. Empty: fed as stored."""

    @property
    def num_features(self) -> int:
        return int(np.prod(self.feature_shape))

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """The shape of one sample (the single unnamed input's)."""
        if self.train.named:
            raise DataError("the data have several named inputs; they have no single feature shape")
        return tuple(int(d) for d in np.asarray(self.train.x).shape[1:])

    @property
    def labels(self) -> str | None:
        """``"classes"`` (integer class labels), ``"values"`` (regression targets) or None."""
        y = self.train.y
        if y is None:
            return None
        return "classes" if np.issubdtype(y.dtype, np.integer) else "values"

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
            for name, array in sorted(part.arrays().items()):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(array).tobytes())
            if part.y is not None:
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
    return train.take(np.sort(np.random.default_rng(seed).permutation(len(train))[:n]))


def check_features(x: np.ndarray, where: str) -> np.ndarray:
    """One feature array, validated: real, finite, ``(samples, ...)``; floats become float32,
    integers (token ids, masks) stay integers (int64)."""
    if np.iscomplexobj(x):
        raise DataError(
            f"{where}: features are complex ({np.asarray(x).dtype}); onnxopt feeds real numbers: "
            "store the real and imaginary parts as separate features"
        )
    raw = np.asarray(x)
    integral = raw.dtype.kind in "iub"
    try:
        x = raw.astype(np.int64) if integral else np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{where}: features are not numeric ({exc}); convert them to numbers"
        ) from None
    if x.ndim < 2 and not integral:
        raise DataError(f"{where}: features must have shape (samples, features), got {x.shape}")
    if not integral and not np.isfinite(x).all():
        raise DataError(f"{where}: {_non_finite(x)}; clean or drop them")
    return x


def check_targets(y: np.ndarray, n: int, where: str) -> np.ndarray:
    """Labels, validated: integral values become int64 class labels ``0..K-1``; other real
    values are regression targets (float32, ``(n,)`` or ``(n, d)``)."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise DataError(f"{where}: labels of dtype {y.dtype} are neither numbers nor strings")
    if len(y) != n:
        raise DataError(f"{where}: {n} samples but {len(y)} labels; give one label per sample")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        raise DataError(f"{where}: {bad} labels are NaN or Inf; clean them")
    integral = y.dtype.kind in "biu" or bool(np.all(np.mod(y, 1) == 0))
    if not integral:
        if y.ndim not in (1, 2):
            raise DataError(f"{where}: regression targets must be (samples,) or (samples, d)")
        return y.astype(np.float32)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be one integer per sample, got shape {y.shape}")
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
    return y


def check_arrays(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One feature array and its labels (see :func:`check_features`, :func:`check_targets`)."""
    x = check_features(x, where)
    return x, check_targets(y, len(x), where)


def class_count(*splits: Split) -> int | None:
    """Largest class label + 1 over the splits (None for regression targets or no labels)."""
    labels = [s.y for s in splits if s.y is not None and len(s.y)]
    if not labels or not all(np.issubdtype(y.dtype, np.integer) for y in labels):
        return None
    return max(int(y.max()) for y in labels) + 1


def _non_finite(x: np.ndarray) -> str:
    """How many samples hold NaN or Inf, and in which (flattened) feature columns."""
    bad = ~np.isfinite(x.reshape(len(x), -1))
    columns = [str(c) for c in np.flatnonzero(bad.any(axis=0))]
    more = f" and {len(columns) - 6} more" if len(columns) > 6 else ""
    where = f"feature column{'s' if len(columns) > 1 else ''} {', '.join(columns[:6])}{more}"
    return f"{int(bad.any(axis=1).sum())} samples contain NaN or Inf (in {where})"
