"""One entry point for every dataset: a bundled name or a path to the user's file.

Formats and how a file's format is inferred when none is given:

=============  ==========================================================================
``digits``     the bundled scikit-learn digits (spec ``"digits"``)
``diabetes``   the bundled scikit-learn diabetes regression data (spec ``"diabetes"``)
``token-corpus`` a generated token corpus with named int64 inputs (the bundled encoder's)
``npz``        ``.npz``: arrays ``x``/``y`` or the six pre-split arrays
``csv``        ``.csv`` with a label column and numeric features
``jsc-openml`` ``.parquet``, or a ``.csv`` with ``jet_type`` and the 16 JSC feature columns
``jsc-h5``     ``.h5``/``.hdf5`` with the hls4ml ``t_allpar_new`` table
=============  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from onnxopt.data.dataset import Dataset
from onnxopt.data.diabetes import load_diabetes
from onnxopt.data.digits import load_digits
from onnxopt.data.jsc import load_jsc_h5, load_jsc_openml, looks_like_jsc_openml
from onnxopt.data.token_corpus import load_token_corpus
from onnxopt.data.user_files import load_csv, load_npz
from onnxopt.errors import DataError, closest, did_you_mean

FileLoader = Callable[[Path, str], Dataset]
"""Reads one file format: ``(path, label_column) -> Dataset``."""

BUNDLED: Mapping[str, Callable[[], Dataset]] = {
    "digits": load_digits,
    "diabetes": load_diabetes,
    "token-corpus": load_token_corpus,
}

FILE_FORMATS: Mapping[str, FileLoader] = {
    "npz": lambda path, _label: load_npz(path),
    "csv": load_csv,
    "jsc-openml": lambda path, _label: load_jsc_openml(path),
    "jsc-h5": lambda path, _label: load_jsc_h5(path),
}

FORMATS = (*BUNDLED, *FILE_FORMATS)

_BY_EXTENSION = {
    ".npz": "npz",
    ".parquet": "jsc-openml",
    ".pq": "jsc-openml",
    ".h5": "jsc-h5",
    ".hdf5": "jsc-h5",
}
_WHAT_SPEC = "use 'digits' for the bundled dataset or a path to .npz/.csv/.parquet/.h5"


def load_dataset(
    spec: str,
    *,
    data_format: str | None = None,
    label_column: str = "label",
) -> Dataset:
    """Load a bundled dataset by name or a dataset file by path.

    Args:
        spec: ``"digits"`` or a path to a ``.npz``, ``.csv``, ``.parquet`` or ``.h5`` file.
        data_format: One of :data:`FORMATS`; inferred from the file when None.
        label_column: The label column of a generic CSV file (ignored by other formats).

    Returns:
        The dataset with its train / validation / test / calibration splits.

    Raises:
        DataError: An unknown format, a spec that is neither a bundled name nor an
            existing file, or a file that does not hold a valid dataset.
    """
    spec = str(spec)
    if data_format is not None and data_format not in FORMATS:
        hint = f" ({did_you_mean(data_format, FORMATS)})" if closest(data_format, FORMATS) else ""
        raise DataError(
            f"unknown data format {data_format!r}; use one of {', '.join(FORMATS)}{hint}"
        )
    if data_format in BUNDLED or (data_format is None and spec in BUNDLED):
        name = data_format or spec
        if spec != name:
            raise DataError(f"format {name!r} is the bundled dataset; pass {name!r} as the spec")
        return BUNDLED[name]()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DataError(_no_such_file(spec, path))
    return FILE_FORMATS[data_format or infer_format(path)](path, label_column)


def infer_format(path: Path) -> str:
    """The file format of ``path`` from its extension (and, for CSV, its header).

    Args:
        path: An existing data file.

    Returns:
        One of the keys of :data:`FILE_FORMATS`.

    Raises:
        DataError: The extension is not one onnxopt knows.
    """
    suffix = path.suffix.lower()
    if suffix in _BY_EXTENSION:
        return _BY_EXTENSION[suffix]
    if suffix == ".csv":
        return "jsc-openml" if looks_like_jsc_openml(_csv_header(path)) else "csv"
    raise DataError(
        f"{path}: cannot tell the format from the extension {suffix or '(none)'!r}; "
        f"pass a data format ({', '.join(FILE_FORMATS)}) or rename to .npz/.csv/.parquet/.h5"
    )


def _csv_header(path: Path) -> list[str]:
    import pandas as pd

    try:
        return [str(c) for c in pd.read_csv(path, nrows=0).columns]
    except (OSError, ValueError):
        return []  # let the CSV loader report the problem with the full file


def _no_such_file(spec: str, path: Path) -> str:
    if path.is_dir():
        return f"{spec}: is a directory, not a data file; {_WHAT_SPEC}"
    if spec in BUNDLED:  # a bundled name with a file format
        return f"{spec!r} is a bundled dataset, not a file; leave the data format unset"
    message = f"no such file {spec!r}; {_WHAT_SPEC}"
    if closest(spec, BUNDLED) and not path.suffix and len(path.parts) == 1:
        message += f" ({did_you_mean(spec, BUNDLED)})"
    return message
