"""Item 1: no data or weights reader runs code from a file.

Every hostile file carries a pickle whose unpickling creates a marker file; the marker must
never appear, and the file is either read as plain numbers or refused with one line (exit 2).
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import h5py
import numpy as np
import onnx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from reliability_helpers import MarkerPayload, assert_one_line, gemm_model

from onnxopt.data import load_dataset
from onnxopt.data.jsc import H5_FEATURES, H5_KEY, H5_LABELS, OPENML_FEATURES
from onnxopt.errors import DataError, ModelLoadError

N = 60


def jsc_frame(seed: int = 0) -> pd.DataFrame:
    """A valid hls4ml ``t_allpar_new`` frame: 16 float features and one-hot labels."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(N, 16)).astype(np.float32), columns=list(H5_FEATURES))
    onehot = np.eye(5, dtype=np.float32)[rng.integers(0, 5, N)]
    for i, name in enumerate(H5_LABELS):
        frame[name] = onehot[:, i]
    return frame


def write_pandas(frame: pd.DataFrame, path: Path, **kwargs) -> Path:
    with warnings.catch_warnings():  # PyTables' PerformanceWarning about pickled objects
        warnings.simplefilter("ignore")
        frame.to_hdf(path, key=H5_KEY, **kwargs)
    return path


def evil_h5(tmp_path: Path, column: str = "j_evil") -> tuple[Path, Path]:
    """A pandas (fixed format) .h5 whose object column ``column`` unpickles to a marker file."""
    marker = tmp_path / "marker"
    frame = jsc_frame()
    frame[column] = pd.Series([MarkerPayload(marker)] * N, dtype=object)
    return write_pandas(frame, tmp_path / "evil.h5", format="fixed"), marker


def message(call, error=DataError) -> str:
    """The one-line message of the ``error`` that ``call()`` raises ("" when it returns)."""
    try:
        call()
    except error as exc:
        assert "\n" not in str(exc), exc
        return str(exc)
    return ""


def assert_has(line: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in line, line


@pytest.mark.parametrize("column", ["j_evil", "j_zlogz"])
def test_h5_object_column_is_refused_unread(tmp_path: Path, column: str) -> None:
    path, marker = evil_h5(tmp_path, column)
    line = message(lambda: load_dataset(str(path)))
    assert not marker.exists()
    assert_has(line, repr(column), "unpickles nothing")


def test_cli_evaluate_h5_object_column(tmp_path: Path, cli) -> None:
    path, marker = evil_h5(tmp_path)
    onnx.save_model(gemm_model(16, 5), str(tmp_path / "m.onnx"))
    outcome = cli("evaluate", "m.onnx", "--data", path)
    assert not marker.exists()
    assert_one_line(outcome, "'j_evil'", "unpickles nothing")


def test_cli_train_h5_object_column(tmp_path: Path, cli) -> None:
    path, marker = evil_h5(tmp_path)
    outcome = cli("train", "jsc-tiny", "--data", path, "--epochs", "1", "-o", "w.pt")
    assert not marker.exists() and not (tmp_path / "w.pt").exists()
    assert_one_line(outcome, "'j_evil'", "unpickles nothing")


def test_cli_search_h5_object_column(tmp_path: Path, cli) -> None:
    path, marker = evil_h5(tmp_path)
    onnx.save_model(gemm_model(16, 5), str(tmp_path / "m.onnx"))
    (tmp_path / "s.toml").write_text(
        f'[model]\nonnx = "m.onnx"\n[data]\ndataset = "{path.name}"\n'
        "[search.quantization.by_type.linear]\nweight_width = [4, 8]\n"
        "[search.strategy]\nn_trials = 2\n"
    )
    outcome = cli("search", "s.toml", "--run-dir", "run", "--no-progress")
    assert not marker.exists()
    assert_one_line(outcome, "'j_evil'", "unpickles nothing")


def _set_attr(path: Path, node: str, name: str, value: bytes) -> None:
    with h5py.File(path, "r+") as handle:
        handle[node].attrs[name] = np.bytes_(value)


def test_h5_table_with_a_crafted_column_names_pickle(tmp_path: Path) -> None:
    """PyTables unpickles any attribute that looks like a pickle: pandas' column names."""
    marker = tmp_path / "marker"
    path = write_pandas(jsc_frame(), tmp_path / "t.h5", format="table")
    payload = pickle.dumps(MarkerPayload(marker), protocol=0)
    _set_attr(path, f"{H5_KEY}/table", "values_block_0_kind", payload)
    line = message(lambda: load_dataset(str(path)))
    assert not marker.exists()
    assert_has(line, "'values_block_0'", "not a plain list of names")


def test_h5_crafted_frame_attributes_are_never_unpickled(tmp_path: Path) -> None:
    """Attributes onnxopt does not need are not read at all: the file loads, nothing runs."""
    marker = tmp_path / "marker"
    path = write_pandas(jsc_frame(), tmp_path / "t.h5", format="table")
    for name in ("non_index_axes", "info", "index_cols", "values_cols", "data_columns"):
        _set_attr(path, H5_KEY, name, pickle.dumps(MarkerPayload(marker), 0))
    line = message(lambda: load_dataset(str(path)))
    assert not marker.exists()
    assert line == ""


@pytest.mark.parametrize(
    "kwargs", [{"format": "fixed"}, {"format": "table"}, {"format": "table", "data_columns": True}]
)
def test_h5_numeric_pandas_frames_read_as_pandas_does(tmp_path: Path, kwargs: dict) -> None:
    frame = jsc_frame()
    frame["j_index"] = np.arange(N)  # another dtype block, ignored
    frame["j_name"] = "jet" if kwargs["format"] == "table" else 0.0  # fixed: strings are pickled
    path = write_pandas(frame, tmp_path / "ok.h5", **kwargs)
    ds = load_dataset(str(path))
    with pd.HDFStore(path, "r") as store:  # pandas itself, on a file known to be harmless
        expected = store[H5_KEY]
    assert len(ds.train) + len(ds.val) + len(ds.test) == len(expected.drop_duplicates())


def test_h5_blosc_frame_gets_one_line(tmp_path: Path) -> None:
    """pandas' reader had PyTables' blosc filter; h5py has not: say so, don't trace back."""
    path = write_pandas(jsc_frame(), tmp_path / "b.h5", complib="blosc", complevel=5)
    assert_has(message(lambda: load_dataset(str(path))), "blosc", "complib='zlib'")


def test_parquet_pickled_extension_type_is_not_unpickled(tmp_path: Path) -> None:
    """pyarrow < 14.0.1 unpickled ``arrow.py_extension_type`` fields (CVE-2023-47248)."""
    marker = tmp_path / "marker"
    rng = np.random.default_rng(0)
    columns = {name: pa.array(rng.normal(size=N)) for name in OPENML_FEATURES}
    columns["jet_type"] = pa.array(rng.choice(list("gqwzt"), N))
    payload = pickle.dumps(MarkerPayload(marker))
    meta = {b"ARROW:extension:name": b"arrow.py_extension_type",
            b"ARROW:extension:metadata": payload}  # fmt: skip
    fields = [pa.field(n, a.type) for n, a in columns.items()]
    fields.append(pa.field("extra", pa.binary(), metadata=meta))
    arrays = [*columns.values(), pa.array([payload] * N)]
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    pq.write_table(table, tmp_path / "x.parquet")
    line = message(lambda: load_dataset(str(tmp_path / "x.parquet")))
    assert not marker.exists()
    assert line == ""


def test_npz_object_array_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    x = np.empty(N, dtype=object)
    x[:] = [MarkerPayload(marker)] * N
    np.savez(tmp_path / "x.npz", x=x, y=np.zeros(N, dtype=np.int64))
    line = message(lambda: load_dataset(str(tmp_path / "x.npz")))
    assert not marker.exists()
    assert_has(line, "allow_pickle=False")


def test_weights_with_a_pickled_object_are_refused_unread(tmp_path: Path, cli) -> None:
    marker = tmp_path / "marker"
    torch.save({"recipe": "digits-mlp", "state_dict": MarkerPayload(marker)}, tmp_path / "w.pt")
    outcome = cli("export", "--weights", "w.pt", "-o", "m.onnx")
    from onnxopt.models.factory import load_factory

    line = message(lambda: load_factory("torch.nn:Identity", tmp_path / "w.pt"), ModelLoadError)
    assert not marker.exists()
    assert_one_line(outcome, "weights_only=True")
    assert_has(line, "weights_only=True")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_column_names_are_parsed_without_unpickling(tmp_path: Path, protocol: int) -> None:
    from onnxopt.data.h5_pandas import _plain_names

    assert _plain_names(pickle.dumps(["j_pt", "é", 3], protocol)) == ["j_pt", "é", "3"]
    for hostile in ([MarkerPayload(tmp_path / "marker")], [["nested"]], {"a": 1}, "text"):
        assert _plain_names(pickle.dumps(hostile, protocol)) is None
    assert _plain_names(b"not a pickle.") is None
    assert not (tmp_path / "marker").exists()
