"""hls4ml jet substructure classification (JSC): 16 high-level jet features, 5 classes.

Two on-disk formats of the same data are read:

* ``jsc-openml``: the OpenML ``hls4ml_lhc_jets_hlf`` table as parquet or CSV, with the 16
  feature columns (:data:`OPENML_FEATURES`) and a string ``jet_type`` column (g/q/w/z/t).
* ``jsc-h5``: the hls4ml HDF5 file with a ``t_allpar_new`` table: the same features named
  ``j_<feature>`` (:data:`H5_FEATURES`, matched case-insensitively, so ``j_zlogZ`` and
  ``j_zlogz`` both work) and one-hot labels ``j_g, j_q, j_w, j_z, j_t``. Other ``j_*``
  columns (``j_pt``, ``j_eta``, ``j_index``, ...) are ignored. The table may be a pandas
  ``to_hdf`` frame (PyTables, fixed or table format; read with h5py, never unpickled: see
  :mod:`onnxopt.data.h5_pandas`), an h5py compound dataset (the original files, as read by
  MASE) or an h5py group of one 1-D dataset per column.

Labels: g=0, q=1, w=2, z=3, t=4 in both formats (the order of the h5 one-hot columns).
Note the hls4ml tutorial's ``LabelEncoder`` on the OpenML table gives alphabetical
g/q/t/w/z instead; models trained that way need their outputs permuted.

Preprocessing follows the MASE lab framework (``chop/dataset/physical/jsc.py``) exactly:

1. keep the 16 features and the label column(s), drop duplicate rows (a row is a
   duplicate only if its features *and* its label repeat);
2. ``train_test_split(x, y, test_size=0.2, random_state=42)`` -> 80% train+val, 20% test;
3. ``StandardScaler`` fitted on the 80% train+val part only, applied to every split.

So the test split holds the same jets as MASE's. MASE has no separate validation split; ours
takes 1/8 of the 80% part with ``train_test_split(..., test_size=0.125,
random_state=42)``, giving 70/10/20 train/validation/test overall. The calibration
subset is ``calibration_subset(train, 512, seed=42)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnxopt.data.dataset import Dataset, Split, calibration_subset, check_arrays
from onnxopt.data.h5_pandas import is_pandas_frame, read_pandas_frame
from onnxopt.data.user_files import MIN_SAMPLES, numeric_matrix, read_table, require_file, shown
from onnxopt.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

OPENML_FEATURES = (
    "zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt",
    "d2_b1_mmdt", "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt",
    "m2_b2_mmdt", "n2_b1_mmdt", "n2_b2_mmdt", "mass_mmdt", "multiplicity",
)  # fmt: skip
H5_FEATURES = tuple(f"j_{name}" for name in OPENML_FEATURES)
CLASS_NAMES = ("g", "q", "w", "z", "t")
H5_LABELS = tuple(f"j_{name}" for name in CLASS_NAMES)
OPENML_LABEL = "jet_type"
H5_KEY = "t_allpar_new"

TEST_SIZE = 0.2
VAL_FRACTION_OF_TRAIN = 0.125  # 1/8 of the 80% -> 10% overall
SPLIT_SEED = 42
CALIBRATION_SIZE = 512

_OPENML_WHAT = "the OpenML hls4ml_lhc_jets_hlf table (16 features such as 'zlogz' + 'jet_type')"
_H5_WHAT = f"an hls4ml '{H5_KEY}' table (16 'j_*' features + one-hot j_g, j_q, j_w, j_z, j_t)"


def looks_like_jsc_openml(columns: Sequence[str]) -> bool:
    """Whether a table's columns are those of the OpenML ``hls4ml_lhc_jets_hlf`` table."""
    names = set(map(str, columns))
    return OPENML_LABEL in names and names.issuperset(OPENML_FEATURES)


def load_jsc_openml(path: Path) -> Dataset:
    """Load the OpenML ``hls4ml_lhc_jets_hlf`` table from parquet or CSV.

    Args:
        path: A ``.parquet``/``.pq`` file, or CSV for any other extension.

    Returns:
        The JSC dataset with MASE's preprocessing (see the module docstring).

    Raises:
        DataError: The file is missing or unreadable, columns are missing, features are
            not finite numbers, or a ``jet_type`` is not one of g/q/w/z/t.
    """
    frame = read_table(path)
    _require_columns(frame.columns, (*OPENML_FEATURES, OPENML_LABEL), path, _OPENML_WHAT)
    x = numeric_matrix(frame, OPENML_FEATURES, str(path))
    types = frame[OPENML_LABEL].astype(str).str.strip()
    codes = types.map({name: i for i, name in enumerate(CLASS_NAMES)})
    if codes.isna().any():
        unknown = sorted(set(types[codes.isna()]))
        raise DataError(
            f"{path}: unknown jet_type values {shown(unknown)}; valid ones are {shown(CLASS_NAMES)}"
        )
    y = codes.to_numpy(dtype=np.int64)
    return _preprocess(x, y, path=path, data_format="jsc-openml")


def load_jsc_h5(path: Path, key: str = H5_KEY) -> Dataset:
    """Load the hls4ml HDF5 file's ``t_allpar_new`` table.

    Args:
        path: The ``.h5``/``.hdf5`` file.
        key: The table's name inside the file.

    Returns:
        The JSC dataset with MASE's preprocessing (see the module docstring).

    Raises:
        DataError: The file is missing or not HDF5, the table or columns are missing,
            values are not finite numbers, or a label row is not exactly one-hot.
    """
    frame = _read_h5_table(require_file(path), key)
    _require_columns(frame.columns, (*H5_FEATURES, *H5_LABELS), path, _H5_WHAT)
    lookup = {str(c).lower(): c for c in frame.columns}
    frame = frame[[lookup[name.lower()] for name in (*H5_FEATURES, *H5_LABELS)]]
    frame.columns = [*H5_FEATURES, *H5_LABELS]
    x = numeric_matrix(frame, H5_FEATURES, str(path))
    onehot = numeric_matrix(frame, H5_LABELS, str(path))
    ok = np.isin(onehot, (0, 1)).all(axis=1) & (onehot.sum(axis=1) == 1)
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        raise DataError(
            f"{path}: {int((~ok).sum())} rows of {', '.join(H5_LABELS)} are not one-hot "
            f"(first: row {first} = {onehot[first].tolist()}); each jet needs exactly one 1"
        )
    return _preprocess(x, onehot.argmax(axis=1), path=path, data_format="jsc-h5")


def _require_columns(columns: Sequence[str], wanted: Sequence[str], path: Path, what: str) -> None:
    have = {str(c).lower() for c in columns}
    missing = [name for name in wanted if name.lower() not in have]
    if missing:
        raise DataError(
            f"{path}: missing columns {shown(missing, 4)} for {what}; "
            f"found {shown([str(c) for c in columns], 4)}"
        )


def _read_h5_table(path: Path, key: str) -> pd.DataFrame:
    """The table as a frame, read with h5py only: pandas' reader unpickles (see h5_pandas)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if key not in handle:
                raise DataError(
                    f"{path}: no '{key}' table (top-level keys: {shown(sorted(handle))}); "
                    f"expected {_H5_WHAT}"
                )
            node = handle[key]
            if is_pandas_frame(node):  # written by pandas' to_hdf (PyTables)
                return read_pandas_frame(node, f"{path} [{key}]")
            return _h5py_frame(path, key, node)
    except OSError as exc:
        if "plugin" in str(exc) or "filter" in str(exc):  # HDF5 looked for a filter plugin
            raise DataError(
                f"{path}: compressed with a filter h5py does not have (blosc or bzip2?); "
                "write it again uncompressed or with complib='zlib'"
            ) from None
        raise DataError(
            f"{path}: cannot read as HDF5 ({_first_line(exc)}); check the file"
        ) from None
    except (ValueError, TypeError, KeyError) as exc:  # h5py on a malformed layout
        raise DataError(f"{path}: cannot read table '{key}' ({_first_line(exc)})") from None


def _h5py_frame(path: Path, key: str, node: object) -> pd.DataFrame:
    """A compound dataset (one field per column) or a group of 1-D column datasets."""
    import h5py
    import pandas as pd

    if isinstance(node, h5py.Dataset) and node.dtype.names:
        fields = _wanted(node.dtype.names)
        if fields is None:
            return pd.DataFrame(columns=list(node.dtype.names))  # for the missing-columns error
        return pd.DataFrame(node.fields(fields)[()])  # read only the columns used
    if isinstance(node, h5py.Group):
        names = [n for n in node if isinstance(node[n], h5py.Dataset) and node[n].ndim == 1]
        fields = _wanted(names)
        if fields is None:
            return pd.DataFrame(columns=names)
        columns = {name: node[name][()] for name in fields}
        if len({len(v) for v in columns.values()}) > 1:
            raise DataError(f"{path}: the column datasets in '{key}' differ in length")
        return pd.DataFrame(columns)
    raise DataError(f"{path}: '{key}' is an array without column names; expected {_H5_WHAT}")


def _wanted(names: Sequence[str]) -> list[str] | None:
    """The stored names of the feature and label columns, or None if any is missing."""
    lookup = {name.lower(): name for name in names}
    wanted = [lookup.get(n.lower()) for n in (*H5_FEATURES, *H5_LABELS)]
    return None if None in wanted else [str(n) for n in wanted]


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _preprocess(x: np.ndarray, y: np.ndarray, *, path: Path, data_format: str) -> Dataset:
    """Dedup, split 80/20 then 7:1, scale with the train+val statistics (MASE's recipe)."""
    import pandas as pd
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    rows = pd.DataFrame(x)
    rows["label"] = y
    keep = ~rows.duplicated().to_numpy()  # pandas drop_duplicates(): first occurrence kept
    x, y = x[keep], y[keep].astype(np.int64)
    if len(y) < MIN_SAMPLES:
        raise DataError(f"{path}: only {len(y)} distinct jets; give at least {MIN_SAMPLES}")
    x_trval, x_test, y_trval, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED
    )
    scaler = StandardScaler().fit(x_trval)
    x_train, x_val, y_train, y_val = train_test_split(
        x_trval, y_trval, test_size=VAL_FRACTION_OF_TRAIN, random_state=SPLIT_SEED
    )
    where = str(path)
    train = Split(*check_arrays(scaler.transform(x_train), y_train, where))
    val = Split(*check_arrays(scaler.transform(x_val), y_val, where))
    test = Split(*check_arrays(scaler.transform(x_test), y_test, where))
    return Dataset(
        name="jsc",
        train=train,
        val=val,
        test=test,
        calibration=calibration_subset(train, CALIBRATION_SIZE, SPLIT_SEED),
        num_classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        source=str(path),
        notes={
            "format": data_format,
            "duplicates_dropped": str(int((~keep).sum())),
            "split": "80/20 train+val/test then 7:1 train/val, random_state=42 (MASE)",
            "scaler": "StandardScaler fitted on train+val (the 80% part)",
        },
        preprocessing=(
            {"op": "standardize", "mean": [float(v) for v in scaler.mean_],
             "std": [float(v) for v in scaler.scale_],
             "note": "(x - mean) / std per feature, fitted on train+val"},
        ),  # fmt: skip
    )
