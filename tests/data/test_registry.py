"""load_dataset: bundled names, format inference, explicit formats and its error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import onnxopt.data
from onnxopt.data import Dataset, Split, load_dataset
from onnxopt.data.jsc import H5_FEATURES, H5_LABELS, OPENML_FEATURES
from onnxopt.errors import DataError


def jsc_frame(n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(n, 16)), columns=list(OPENML_FEATURES))
    frame["jet_type"] = rng.choice(list("gqwzt"), size=n)
    return frame


def h5_frame(n: int = 200) -> pd.DataFrame:
    base = jsc_frame(n)
    frame = pd.DataFrame(base[list(OPENML_FEATURES)].to_numpy(), columns=list(H5_FEATURES))
    for name, col in zip("gqwzt", H5_LABELS, strict=True):
        frame[col] = (base["jet_type"] == name).astype(float)
    return frame


def generic_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["u", "v", "w"])
    frame["label"] = rng.integers(0, 2, size=n)
    return frame


def test_exports() -> None:
    assert set(onnxopt.data.__all__) == {"Dataset", "Split", "load_dataset"}
    assert Dataset.__name__ == "Dataset" and Split.__name__ == "Split"


def test_digits_is_bundled() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits" and ds.num_classes == 10 and ds.feature_shape == (64,)
    assert load_dataset("digits", data_format="digits").fingerprint() == ds.fingerprint()


def test_inferred_formats(tmp_path: Path) -> None:
    jsc = jsc_frame()
    jsc.to_parquet(tmp_path / "a.parquet")
    jsc.to_csv(tmp_path / "b.csv", index=False)
    h5_frame().to_hdf(tmp_path / "c.hdf5", key="t_allpar_new")
    h5_frame().to_hdf(tmp_path / "c.h5", key="t_allpar_new")
    generic_frame().to_csv(tmp_path / "d.csv", index=False)
    np.savez(tmp_path / "e.npz", x=np.ones((30, 2)), y=np.arange(30) % 3)
    expected = {"a.parquet": "jsc-openml", "b.csv": "jsc-openml", "c.hdf5": "jsc-h5",
                "c.h5": "jsc-h5", "d.csv": "csv", "e.npz": "npz"}  # fmt: skip
    for name, fmt in expected.items():
        assert load_dataset(str(tmp_path / name)).notes["format"] == fmt, name


def test_explicit_format_and_label_column(tmp_path: Path) -> None:
    frame = generic_frame().rename(columns={"label": "y"})
    path = tmp_path / "data.txt"
    frame.to_csv(path, index=False)
    ds = load_dataset(str(path), data_format="csv", label_column="y")
    assert ds.notes["format"] == "csv" and ds.feature_shape == (3,)
    # A JSC-looking CSV can still be read as a generic CSV when asked.
    jsc = tmp_path / "jets.csv"
    jsc_frame().to_csv(jsc, index=False)
    generic = load_dataset(str(jsc), data_format="csv", label_column="jet_type")
    assert generic.class_names == ("g", "q", "t", "w", "z")  # sorted, unlike jsc-openml


def test_h5_without_extension_needs_format(tmp_path: Path) -> None:
    path = tmp_path / "jets.dat"
    with h5py.File(path, "w") as handle:
        handle["t_allpar_new"] = h5_frame().to_records(index=False)
    with pytest.raises(DataError, match=r"cannot tell the format .*'\.dat'.*jsc-h5"):
        load_dataset(str(path))
    assert load_dataset(str(path), data_format="jsc-h5").num_classes == 5


def _message(call) -> str:
    with pytest.raises(DataError) as info:
        call()
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value)
    return str(info.value)


def test_unknown_format_lists_valid_ones() -> None:
    message = _message(lambda: load_dataset("digits", data_format="parquet"))
    assert "unknown data format 'parquet'" in message
    assert "digits, diabetes, token-corpus, npz, csv, jsc-openml, jsc-h5" in message
    message = _message(lambda: load_dataset("digits", data_format="jsc"))
    assert "did you mean 'jsc-h5'?" in message


def test_no_such_file() -> None:
    message = _message(lambda: load_dataset("/nowhere/mine.npz"))
    assert message == (
        "no such file '/nowhere/mine.npz'; use 'digits' for the bundled dataset "
        "or a path to .npz/.csv/.parquet/.h5"
    )


def test_close_to_bundled_name_suggests_it() -> None:
    message = _message(lambda: load_dataset("digts"))
    assert "no such file 'digts'" in message and "did you mean 'digits'" in message
    assert "did you mean" not in _message(lambda: load_dataset("mnist"))


def test_bundled_format_with_another_spec(tmp_path: Path) -> None:
    message = _message(lambda: load_dataset(str(tmp_path / "x.npz"), data_format="digits"))
    assert "pass 'digits' as the spec" in message
    message = _message(lambda: load_dataset("digits", data_format="npz"))
    assert message == "'digits' is a bundled dataset, not a file; leave the data format unset"


def test_directory_spec(tmp_path: Path) -> None:
    assert "is a directory" in _message(lambda: load_dataset(str(tmp_path)))


def test_import_does_not_pull_heavy_readers() -> None:
    code = (
        "import sys, onnxopt.data; "
        "print(sorted(m for m in ('pandas', 'h5py', 'tables', 'pyarrow', 'sklearn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_digits_split_file_matches_a_fresh_stratified_split():
    """The shipped split indices are the stratified 60/20/20 split, and the pixels equal
    scikit-learn's load_digits."""
    from sklearn.datasets import load_digits as sk_load_digits

    from onnxopt.data.dataset import stratified_split
    from onnxopt.data.digits import SPLIT_FRACTIONS, SPLIT_SEED, digits_arrays, load_digits

    bunch = sk_load_digits()
    pixels, target = digits_arrays()
    np.testing.assert_array_equal(pixels, bunch.data)
    np.testing.assert_array_equal(target, bunch.target)
    x = (bunch.data / 16.0).astype(np.float32)
    fresh = stratified_split(x, bunch.target.astype(np.int64), fractions=SPLIT_FRACTIONS,
                             seed=SPLIT_SEED)  # fmt: skip
    shipped = load_digits()
    for a, b in zip(fresh, (shipped.train, shipped.val, shipped.test), strict=True):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


def test_loading_digits_does_not_import_sklearn():
    code = ("import sys; from onnxopt.data import load_dataset; load_dataset('digits'); "
            "print('sklearn' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
