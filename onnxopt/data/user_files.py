"""Datasets from the user's own files: ``.npz`` archives and CSV tables.

* ``.npz`` holds arrays ``x`` (features, ``(n, ...)``) and ``y`` (one label per sample), or
  the pre-split ``x_train, y_train, x_val, y_val, x_test, y_test``. An optional
  ``class_names`` array names the classes.
* CSV holds one label column (``label`` unless the caller names another) and numeric
  feature columns; every other column is a feature.

Unsplit data gets the same split as the bundled digits: stratified 60/20/20
train/validation/test with ``random_state=0`` (unstratified when a class is too small to
stratify); the calibration subset is 256 training samples drawn with seed 0. String labels
map to ``0..K-1`` in sorted order and are kept as ``class_names``. Features are used as
stored (no scaling). Every problem with a file raises :class:`~onnxopt.errors.DataError`
naming the file and the fix.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnxopt.data.dataset import (
    Dataset,
    Split,
    calibration_subset,
    check_features,
    check_targets,
    class_count,
    stratified_split,
)
from onnxopt.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
SPLIT_SEED = 0
CALIBRATION_SIZE = 256
MIN_SAMPLES = 10


def shown(names: Sequence[str], limit: int = 6) -> str:
    """``'a', 'b', 'c' (and 4 more)``: a short listing for one-line error messages."""
    names = list(names)
    if not names:
        return "none"
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(repr(str(n)) for n in names[:limit]) + more


def require_file(path: Path) -> Path:
    """``path`` if it is an existing file, else a DataError saying so."""
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise DataError(f"{path}: is a directory, not a data file; give the file inside it")
    return path


def read_table(path: Path) -> pd.DataFrame:
    """Read a parquet (``.parquet``/``.pq``) or CSV (anything else) file into a DataFrame."""
    import pandas as pd

    require_file(path)
    parquet = path.suffix.lower() in (".parquet", ".pq")
    try:
        # pyarrow >= 14.0.1 unpickles no extension types (CVE-2023-47248); pandas' metadata
        # in the file is JSON. Both tested with hostile files in tests/reliability.
        return pd.read_parquet(path, engine="pyarrow") if parquet else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        kind = "parquet" if parquet else "CSV"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read as {kind} ({first}); check the file") from None


def numeric_matrix(frame: pd.DataFrame, columns: Sequence[str], where: str) -> np.ndarray:
    """The given columns as one numeric array, naming non-numeric or non-finite columns."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    columns = list(columns)
    text = [c for c in columns if not (is_numeric_dtype(frame[c]) or is_bool_dtype(frame[c]))]
    if text:
        raise DataError(
            f"{where}: feature columns {shown(text)} are not numeric; "
            "convert them to numbers or drop them"
        )
    complex_ = [c for c in columns if frame[c].dtype.kind == "c"]
    if complex_:
        raise DataError(
            f"{where}: feature columns {shown(complex_)} are complex; onnxopt feeds real "
            "numbers: store the real and imaginary parts as separate real columns"
        )
    values = frame[columns].to_numpy()  # the file's own dtype (float32 stays float32)
    if values.dtype.kind not in "iuf":
        values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        cols = [c for c, b in zip(columns, bad.any(axis=0), strict=True) if b]
        raise DataError(
            f"{where}: {int(bad.any(axis=1).sum())} rows have NaN, Inf or empty values "
            f"in columns {shown(cols)}; clean or drop those rows"
        )
    return values


def encode_labels(y: np.ndarray, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels as they are; string labels mapped to 0..K-1 in sorted order.

    Returns:
        The labels (not yet validated for integrality) and the class names (empty for
        numeric labels).
    """
    y = np.asarray(y)
    if y.dtype.kind in "biuf":
        return y, ()
    if y.dtype.kind not in "USO":
        raise DataError(f"{where}: labels of dtype {y.dtype} are neither numbers nor strings")
    text = y.astype(str)
    names, codes = np.unique(text, return_inverse=True)
    return codes.astype(np.int64), tuple(str(n) for n in names)


def split_unsplit(x, y: np.ndarray | None) -> tuple[Split, Split, Split, str]:
    """60/20/20: stratified for class labels (unstratified when a class is too small, or for
    regression targets and unlabelled data); says which."""
    whole = Split(x, y)
    if y is not None and np.issubdtype(y.dtype, np.integer):
        try:
            rows = np.arange(len(whole))
            train, val, test = stratified_split(
                rows, y, fractions=SPLIT_FRACTIONS, seed=SPLIT_SEED
            )
            strat = np.bincount(y).min() >= 2
            how = "stratified 60/20/20" if strat else "unstratified 60/20/20"
            return whole.take(train.array()), whole.take(val.array()), whole.take(test.array()), how
        except ValueError:  # a class too small for the requested test/val size
            pass
    from sklearn.model_selection import train_test_split

    f_train, f_val, f_test = SPLIT_FRACTIONS
    rows = np.arange(len(whole))
    rest, test = train_test_split(rows, test_size=f_test, random_state=SPLIT_SEED)
    train, val = train_test_split(
        rest, test_size=f_val / (f_train + f_val), random_state=SPLIT_SEED
    )
    return whole.take(train), whole.take(val), whole.take(test), "unstratified 60/20/20"


def build_dataset(
    x,
    y: np.ndarray | None,
    *,
    path: Path,
    data_format: str,
    class_names: tuple[str, ...] = (),
) -> Dataset:
    """Validate, split (60/20/20, seed 0) and wrap unsplit features and labels (``x``: one
    array or one per named input; ``y``: None for unlabelled data)."""
    where = str(path)
    x = _check_inputs(x, where)
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    y = None if y is None else check_targets(y, n, where)
    if n < MIN_SAMPLES:
        raise DataError(f"{where}: only {n} samples; give at least {MIN_SAMPLES}")
    train, val, test, how = split_unsplit(x, y)
    notes = {"format": data_format, "split": f"{how}, seed {SPLIT_SEED}"}
    return _wrap(train, val, test, path=path, class_names=class_names, notes=notes)


def _check_inputs(x, where: str):
    if isinstance(x, dict):
        return {name: check_features(a, f"{where} [{name}]") for name, a in x.items()}
    return check_features(x, where)


def _wrap(
    train: Split,
    val: Split,
    test: Split,
    *,
    path: Path,
    class_names: tuple[str, ...],
    notes: dict[str, str],
) -> Dataset:
    top = class_count(train, val, test)
    if class_names and top is not None and top > len(class_names):
        raise DataError(
            f"{path}: label {top - 1} but only {len(class_names)} class_names; "
            "give one name per class"
        )
    return Dataset(
        name=path.stem,
        train=train,
        val=val,
        test=test,
        calibration=calibration_subset(train, CALIBRATION_SIZE, SPLIT_SEED),
        num_classes=(len(class_names) or top) if top is not None else None,
        class_names=class_names,
        source=str(path),
        notes=notes,
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if require_file(path).stat().st_size == 0:
        raise DataError(
            f"{path}: is empty (0 bytes); save the data with np.savez(path, x=features, y=labels)"
        )
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(
                f"{path}: is a single .npy array, not an .npz archive; "
                "save with np.savez(path, x=features, y=labels)"
            )
        with archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # EOFError: cut short
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{path}: cannot read as .npz ({first}); save numeric arrays with np.savez"
        ) from None


SPLITS = ("train", "val", "test")


def _npz_layout(path: Path, arrays: dict[str, np.ndarray]):
    """``(inputs, labels)``: per split (None: unsplit) the input arrays by name and the labels.

    ``x`` is the one unnamed input; ``x_<name>`` (or any other array name) is model input
    ``<name>``; ``y`` holds the labels; a ``_train``/``_val``/``_test`` suffix puts an array
    in that split.
    """
    inputs: dict[str | None, dict[str, np.ndarray]] = {}
    labels: dict[str | None, np.ndarray] = {}
    for key, array in arrays.items():
        base, split = key, None
        for part in SPLITS:
            if key.endswith(f"_{part}"):
                base, split = key[: -len(part) - 1], part
        if base == "y":
            labels[split] = array
            continue
        name = base[2:] if base.startswith("x_") else base
        inputs.setdefault(split, {})[name] = array
    splits = {*inputs, *labels}
    if splits - {None} and None in splits:
        unsplit = sorted({*inputs.get(None, {}), *(["y"] if None in labels else [])})
        raise DataError(
            f"{path}: mixes pre-split arrays with unsplit ones ({shown(unsplit)}); save every "
            "array with a _train/_val/_test suffix, or none"
        )
    return inputs, labels


def _one_or_named(named: dict[str, np.ndarray]):
    """A single input called ``x`` is the unnamed feature array; others stay named."""
    return named["x"] if list(named) == ["x"] else named


def load_npz(path: Path) -> Dataset:
    """Load an ``.npz`` archive.

    Layouts: ``x`` and ``y`` (features and labels); arrays named after the model inputs
    (``ids``, ``mask`` or ``x_ids``, ``x_mask``) and ``y``; the same with ``_train``, ``_val``
    and ``_test`` suffixes for pre-split data (``x_train, y_train, ...``). ``y`` may be left
    out (unlabelled data: fidelity metrics only) and holds class labels (integers or
    strings) or regression targets (other numbers).

    Raises:
        DataError: The file is missing or unreadable, arrays are missing or inconsistent,
            features are not finite numbers, or there are too few samples.
    """
    arrays = _read_npz(path)
    names = tuple(str(n) for n in arrays.pop("class_names", np.array([], dtype=str)))
    inputs, labels = _npz_layout(path, arrays)
    if not inputs:
        raise DataError(
            f"{path}: holds no feature arrays (has {shown(sorted(arrays))}); "
            "save with np.savez(path, x=features, y=labels)"
        )
    if None not in inputs:
        return _load_presplit(path, inputs, labels, names)
    y, string_names = (None, ()) if None not in labels else encode_labels(labels[None], str(path))
    return build_dataset(
        _one_or_named(inputs[None]), y, path=path, data_format="npz",
        class_names=string_names or names,
    )  # fmt: skip


def _load_presplit(path: Path, inputs: dict, labels: dict, names: tuple[str, ...]) -> Dataset:
    missing = [p for p in SPLITS if p not in inputs]
    if missing or (labels and any(p not in labels for p in SPLITS)):
        want = ", ".join(f"x_{p}/y_{p}" for p in SPLITS)
        raise DataError(
            f"{path}: pre-split archive lacks the {', '.join(missing) or 'some labels'} split "
            f"(has {shown(sorted(k for part in inputs.values() for k in part))}); save {want}"
        )
    sizes = [len(next(iter(inputs[p].values()))) for p in SPLITS]
    for part, size in zip(SPLITS, sizes, strict=True):
        if labels and len(np.atleast_1d(labels[part])) != size:
            raise DataError(
                f"{path} [{part}]: {size} samples but {len(np.atleast_1d(labels[part]))} "
                "labels; give one label per sample"
            )
    # Encode labels over all splits at once so a string maps to one index everywhere.
    y_all: np.ndarray | None = None
    string_names: tuple[str, ...] = ()
    if labels:
        y_all, string_names = encode_labels(
            np.concatenate([np.atleast_1d(labels[p]) for p in SPLITS]), str(path)
        )
    bounds = np.cumsum([0, *sizes])
    splits = []
    for i, part in enumerate(SPLITS):
        where = f"{path} [{part}]"
        x = _check_inputs(_one_or_named(inputs[part]), where)
        y = None if y_all is None else check_targets(
            y_all[bounds[i] : bounds[i + 1]], sizes[i], where
        )  # fmt: skip
        if sizes[i] == 0:
            raise DataError(f"{path}: x_{part}/y_{part} are empty; give every split some samples")
        splits.append(Split(x, y))
    if sum(sizes) < MIN_SAMPLES:
        raise DataError(f"{path}: only {sum(sizes)} samples in all; give at least {MIN_SAMPLES}")
    shapes = {tuple((k, v.shape[1:]) for k, v in sorted(s.arrays().items())) for s in splits}
    if len(shapes) > 1:
        raise DataError(
            f"{path}: splits have different feature shapes {sorted(shapes)}; "
            "give every split the same features"
        )
    notes = {"format": "npz", "split": "pre-split in file"}
    return _wrap(*splits, path=path, class_names=string_names or names, notes=notes)


def load_csv(path: Path, label_column: str = "label") -> Dataset:
    """Load a CSV table with one label column and numeric feature columns.

    Args:
        path: The CSV file (a header row names the columns).
        label_column: The column holding the labels; all other columns are features.

    Returns:
        The dataset, split 60/20/20 (seed 0); string labels become 0..K-1 in sorted order.

    Raises:
        DataError: The file is missing or unreadable, the label column is missing, a
            feature column is not numeric or not finite, or there are too few samples.
    """
    frame = read_table(path)
    columns = [str(c) for c in frame.columns]
    if label_column not in columns:
        hint = "; pass the label column's name" if columns else ""
        raise DataError(
            f"{path}: no label column {label_column!r} (columns: {shown(columns)}){hint}"
        )
    unnamed = [c for c in columns if c.startswith("Unnamed: ")]
    if unnamed:
        raise DataError(
            f"{path}: columns {shown(unnamed)} have no header (a saved DataFrame index?); "
            "write the CSV with index=False or name the columns"
        )
    features = [c for c in frame.columns if str(c) != label_column]
    if not features:
        raise DataError(f"{path}: no feature columns besides {label_column!r}; add features")
    labels = frame[label_column]
    if labels.isna().any():
        raise DataError(
            f"{path}: {int(labels.isna().sum())} rows have no value in label column "
            f"{label_column!r}; fill or drop them"
        )
    x = numeric_matrix(frame, features, str(path))
    y, names = encode_labels(labels.to_numpy(), str(path))
    return build_dataset(x, y, path=path, data_format="csv", class_names=names)
