"""Generic user files (.npz, CSV): round trips against sklearn, and every error message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from onnxopt.data.dataset import Split, calibration_subset
from onnxopt.data.user_files import load_csv, load_npz
from onnxopt.errors import DataError


def make_xy(n: int = 240, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, classes, size=n)


def reference_split(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stratified 60/20/20 with seed 0, recomputed with sklearn."""
    x_rest, x_te, y_rest, y_te = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x_rest, y_rest, test_size=0.25, random_state=0, stratify=y_rest
    )
    return {"train": (x_tr, y_tr), "val": (x_va, y_va), "test": (x_te, y_te)}


def assert_splits(ds, expected) -> None:
    for part, (x, y) in expected.items():
        np.testing.assert_allclose(ds.split(part).x, x, rtol=1e-6)
        np.testing.assert_array_equal(ds.split(part).y, y)
        assert ds.split(part).x.dtype == np.float32 and ds.split(part).y.dtype == np.int64


def test_npz_unsplit(tmp_path: Path) -> None:
    x, y = make_xy()
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    ds = load_npz(path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (144, 48, 48)
    assert_splits(ds, reference_split(x, y))
    assert ds.num_classes == 3 and ds.class_names == ()
    assert ds.name == "mine" and ds.source == str(path)
    assert len(ds.calibration) == 144  # fewer than 256 training samples: all of them
    np.testing.assert_array_equal(ds.calibration.x, calibration_subset(ds.train, 256, 0).x)


def test_npz_keeps_image_shaped_features_and_class_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x, y = rng.random((600, 1, 4, 4)), rng.integers(0, 2, size=600)
    path = tmp_path / "img.npz"
    np.savez(path, x=x, y=y, class_names=np.array(["cat", "dog"]))
    ds = load_npz(path)
    assert ds.feature_shape == (1, 4, 4)
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert len(ds.calibration) == 256
    rows = {r.tobytes() for r in ds.train.x}
    assert all(r.tobytes() in rows for r in ds.calibration.x)


def test_npz_presplit_is_used_as_is(tmp_path: Path) -> None:
    (x1, y1), (x2, y2), (x3, y3) = make_xy(50, seed=1), make_xy(20, seed=2), make_xy(30, seed=3)
    path = tmp_path / "split.npz"
    np.savez(path, x_train=x1, y_train=y1, x_val=x2, y_val=y2, x_test=x3, y_test=y3)
    ds = load_npz(path)
    assert_splits(ds, {"train": (x1, y1), "val": (x2, y2), "test": (x3, y3)})
    assert ds.notes["split"] == "pre-split in file"
    assert ds.num_classes == int(max(y1.max(), y2.max(), y3.max())) + 1


def test_npz_presplit_string_labels_map_consistently(tmp_path: Path) -> None:
    x = np.arange(24, dtype=np.float32).reshape(12, 2)
    path = tmp_path / "split.npz"
    labels = {"y_train": ["b", "c"] * 3, "y_val": ["a", "b", "c"], "y_test": ["c", "a", "b"]}
    arrays = {k: np.array(v) for k, v in labels.items()}
    np.savez(path, x_train=x[:6], x_val=x[6:9], x_test=x[9:], **arrays)
    ds = load_npz(path)
    assert ds.class_names == ("a", "b", "c")
    assert ds.train.y.tolist() == [1, 2] * 3
    assert ds.val.y.tolist() == [0, 1, 2] and ds.test.y.tolist() == [2, 0, 1]


def test_csv_numeric_labels(tmp_path: Path) -> None:
    x, y = make_xy()
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)])
    frame.insert(2, "target", y)  # label column in the middle: the rest keep their order
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    ds = load_csv(path, label_column="target")
    back = pd.read_csv(path)
    assert_splits(ds, reference_split(back.drop(columns="target").to_numpy(), y))
    assert ds.num_classes == 3 and ds.feature_shape == (5,)


def test_csv_string_labels_sorted(tmp_path: Path) -> None:
    x, y = make_xy()
    names = np.array(["zebra", "ant", "moth"])[y]  # sorted: ant=0, moth=1, zebra=2
    frame = pd.DataFrame(x, columns=list("abcde"))
    frame["label"] = names
    path = tmp_path / "table.csv"
    frame.to_csv(path, index=False)
    ds = load_csv(path)
    assert ds.class_names == ("ant", "moth", "zebra") and ds.num_classes == 3
    codes = np.searchsorted(["ant", "moth", "zebra"], names)
    assert_splits(ds, reference_split(pd.read_csv(path)[list("abcde")].to_numpy(), codes))


def test_tiny_class_falls_back_to_unstratified(tmp_path: Path) -> None:
    x, y = make_xy(30)
    y[0] = 3  # one sample of class 3: cannot stratify
    path = tmp_path / "small.npz"
    np.savez(path, x=x, y=y)
    ds = load_npz(path)
    assert ds.notes["split"].startswith("unstratified")
    assert len(ds.train) + len(ds.val) + len(ds.test) == 30 and ds.num_classes == 4


def test_stratify_error_from_sklearn_falls_back(tmp_path: Path) -> None:
    # 12 samples, 6 classes of 2: stratifiable, but a 3-sample test split can't hold 6 classes.
    x, y = make_xy(12)[0], np.repeat(np.arange(6), 2)
    path = tmp_path / "small.npz"
    np.savez(path, x=x, y=y)
    ds = load_npz(path)
    assert ds.notes["split"].startswith("unstratified")
    assert len(ds.train) + len(ds.val) + len(ds.test) == 12


# --- errors -----------------------------------------------------------------------------


def _raises(call, *fragments: str) -> None:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_files(tmp_path: Path) -> None:
    _raises(lambda: load_npz(tmp_path / "gone.npz"), "gone.npz", "no such file")
    _raises(lambda: load_csv(tmp_path / "gone.csv"), "gone.csv", "no such file")
    _raises(lambda: load_csv(tmp_path), "is a directory")


def test_npz_arrays_other_than_x_and_y_are_named_inputs(tmp_path: Path) -> None:
    """Without ``x`` every array is a model input by its name (``x_<name>`` too); without
    ``y`` the data are unlabelled. Whether the names fit the model is checked when it is fed."""
    path = tmp_path / "named.npz"
    np.savez(path, x_ids=np.arange(40).reshape(20, 2), mask=np.ones((20, 2), np.int64))
    ds = load_npz(path)
    assert ds.train.named and set(ds.train.arrays()) == {"ids", "mask"}
    assert ds.train.arrays()["ids"].dtype == np.int64 and ds.train.y is None
    assert ds.labels is None and ds.num_classes is None
    assert len(ds.train) + len(ds.val) + len(ds.test) == 20


def test_npz_with_only_labels_says_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, y=np.zeros(20))
    _raises(lambda: load_npz(path), "holds no feature arrays", "'y'", "np.savez")


def test_npz_partial_presplit(tmp_path: Path) -> None:
    x, y = make_xy(20)
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    _raises(lambda: load_npz(path), "lacks the val split", "x_val/y_val")


def test_npz_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    path.write_text("hello")
    _raises(lambda: load_npz(path), "cannot read as .npz")
    npy = tmp_path / "arr.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros((20, 2)))
    _raises(lambda: load_npz(npy), "single .npy array")


def test_npz_object_arrays_refused(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([[1, "a"]] * 12, dtype=object), y=np.zeros(12))
    _raises(lambda: load_npz(path), "cannot read as .npz")


def test_npz_nan_and_inf(tmp_path: Path) -> None:
    x, y = make_xy(40)
    x[3, 1], x[9, 0] = np.nan, np.inf
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, y=y)
    _raises(lambda: load_npz(path), str(path), "2 samples contain NaN or Inf")


def test_too_few_samples(tmp_path: Path) -> None:
    x, y = make_xy(6)
    path = tmp_path / "few.npz"
    np.savez(path, x=x, y=y)
    _raises(lambda: load_npz(path), "only 6 samples", "at least 10")


def test_csv_missing_label_column_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": range(20), "class": [0, 1] * 10}).to_csv(path, index=False)
    _raises(lambda: load_csv(path), "no label column 'label'", "'a', 'class'")


def test_csv_non_numeric_features_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    frame = pd.DataFrame({"a": range(20), "color": ["red"] * 20, "label": [0, 1] * 10})
    frame.to_csv(path, index=False)
    _raises(lambda: load_csv(path), "'color'", "not numeric")


def test_csv_nan_and_inf_columns_named(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    frame = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0), "label": [0, 1] * 10})
    frame.loc[4, "a"], frame.loc[5, "b"] = np.nan, np.inf
    frame.to_csv(path, index=False)
    _raises(lambda: load_csv(path), "2 rows", "'a', 'b'", "NaN")


def test_csv_empty_labels(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    frame = pd.DataFrame({"a": np.arange(20.0), "label": [0.0, 1.0] * 10})
    frame.loc[2, "label"] = np.nan
    frame.to_csv(path, index=False)
    _raises(lambda: load_csv(path), "1 rows have no value in label column 'label'")


def test_csv_saved_index_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": np.arange(20.0), "label": [0, 1] * 10}).to_csv(path)  # index=True
    _raises(lambda: load_csv(path), "'Unnamed: 0'", "index=False")


def test_csv_negative_or_fractional_labels(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": np.arange(20.0), "label": [-1, 1] * 10}).to_csv(path, index=False)
    _raises(lambda: load_csv(path), "found -1")
    pd.DataFrame({"a": np.arange(20.0), "label": [0.5, 1] * 10}).to_csv(path, index=False)
    targets = load_csv(path)  # non-integer values are regression targets
    assert targets.labels == "values" and targets.num_classes is None
    assert targets.train.y.dtype == np.float32


def test_csv_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("")
    _raises(lambda: load_csv(path), "cannot read as CSV")


def test_split_array_is_the_one_feature_array_and_refuses_named_inputs():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert Split(x).array() is x
    with pytest.raises(DataError, match="several named inputs"):
        Split({"a": x, "b": x}).array()
