"""Item 8, data files: each problem is one line (exit 2) before any work, never a traceback."""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
from reliability_helpers import assert_one_line, gemm_model

from onnxopt.data import load_dataset
from onnxopt.data.dataset import MAX_CLASSES
from onnxopt.data.jsc import H5_FEATURES, H5_KEY, H5_LABELS
from onnxopt.errors import DataError

RNG = np.random.default_rng(0)


def loader_error(path: Path, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(str(path))
    line = str(info.value)
    assert "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    onnx.save_model(gemm_model(4, 3), str(tmp_path / "m.onnx"))
    return tmp_path / "m.onnx"


def test_npz_with_more_samples_than_labels(tmp_path: Path, model: Path, cli) -> None:
    np.savez(tmp_path / "d.npz", x=RNG.normal(size=(20, 4)), y=RNG.integers(0, 3, 19))
    loader_error(tmp_path / "d.npz", "20 samples but 19 labels")
    assert_one_line(cli("evaluate", model, "--data", "d.npz"), "20 samples but 19 labels")


def test_presplit_npz_with_a_split_short_of_labels(tmp_path: Path) -> None:
    parts = {}
    for part in ("train", "val", "test"):
        parts[f"x_{part}"], parts[f"y_{part}"] = RNG.normal(size=(10, 4)), RNG.integers(0, 3, 10)
    parts["y_val"] = parts["y_val"][:7]
    np.savez(tmp_path / "d.npz", **parts)
    loader_error(tmp_path / "d.npz", "[val]", "10 samples but 7 labels")


def test_empty_npz_file(tmp_path: Path, model: Path, cli) -> None:
    (tmp_path / "e.npz").write_bytes(b"")
    loader_error(tmp_path / "e.npz", "e.npz", "empty (0 bytes)")
    assert_one_line(cli("evaluate", model, "--data", "e.npz"), "empty (0 bytes)")


@pytest.mark.parametrize("cut", [6, 20, 100])
def test_npy_bytes_cut_short(tmp_path: Path, cut: int) -> None:
    full = tmp_path / "full.npy"
    np.save(full, RNG.normal(size=(30, 4)))
    (tmp_path / "cut.npz").write_bytes(full.read_bytes()[:cut])
    loader_error(tmp_path / "cut.npz", "cut.npz")


def test_npz_member_cut_short(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=RNG.normal(size=(30, 4)), y=RNG.integers(0, 3, 30))
    with zipfile.ZipFile(tmp_path / "d.npz") as archive:
        data = archive.read("x.npy")
    with zipfile.ZipFile(tmp_path / "t.npz", "w") as archive:
        archive.writestr("x.npy", data[:200])
        archive.writestr("y.npy", data[:90])
    loader_error(tmp_path / "t.npz", "t.npz")


@pytest.mark.parametrize("label", [2**40, MAX_CLASSES])
def test_huge_label_is_refused_before_allocating(tmp_path: Path, label: int, cli) -> None:
    y = RNG.integers(0, 3, 30)
    y[4] = label
    np.savez(tmp_path / "d.npz", x=RNG.normal(size=(30, 4)), y=y)
    loader_error(tmp_path / "d.npz", f"{label:,}", f"{MAX_CLASSES:,}", "0..K-1")
    (tmp_path / "d.csv").write_text(
        "a,b,label\n" + "".join(f"{i},{i % 7},{v}\n" for i, v in enumerate(y))
    )
    loader_error(tmp_path / "d.csv", f"{label:,}")


def test_largest_class_count_still_loads(tmp_path: Path) -> None:
    y = RNG.integers(0, 3, 30)
    y[4] = MAX_CLASSES - 1
    np.savez(tmp_path / "d.npz", x=RNG.normal(size=(30, 4)), y=y)
    assert load_dataset(str(tmp_path / "d.npz")).num_classes == MAX_CLASSES


def test_complex_features_in_an_npz(tmp_path: Path, model: Path, cli) -> None:
    x = RNG.normal(size=(30, 4)) + 1j * RNG.normal(size=(30, 4))
    np.savez(tmp_path / "c.npz", x=x, y=RNG.integers(0, 3, 30))
    loader_error(tmp_path / "c.npz", "complex", "real")
    assert_one_line(cli("evaluate", model, "--data", "c.npz"), "complex")


def test_complex_features_in_an_h5_table(tmp_path: Path) -> None:
    n = 40
    fields = [(name, np.complex64 if name == "j_c1_b0_mmdt" else np.float32)
              for name in (*H5_FEATURES, *H5_LABELS)]  # fmt: skip
    rows = np.zeros(n, dtype=fields)
    for name in H5_FEATURES:
        rows[name] = RNG.normal(size=n)
    rows["j_g"] = 1.0
    with h5py.File(tmp_path / "c.h5", "w") as handle:
        handle[H5_KEY] = rows
    loader_error(tmp_path / "c.h5", "complex", "'j_c1_b0_mmdt'")
