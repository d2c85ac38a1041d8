"""JSC loaders: files written in the real formats, checked against sklearn recomputed inline."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from onnxopt.data.dataset import calibration_subset
from onnxopt.data.jsc import load_jsc_h5, load_jsc_openml
from onnxopt.errors import DataError

# Written out independently of onnxopt.data.jsc so a typo there cannot hide here.
FEATURES = [
    "zlogz", "c1_b0_mmdt", "c1_b1_mmdt", "c1_b2_mmdt", "c2_b1_mmdt", "c2_b2_mmdt",
    "d2_b1_mmdt", "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt",
    "m2_b2_mmdt", "n2_b1_mmdt", "n2_b2_mmdt", "mass_mmdt", "multiplicity",
]  # fmt: skip
H5_FEATURES = ["j_zlogZ", *[f"j_{name}" for name in FEATURES[1:]]]
H5_LABELS = ["j_g", "j_q", "j_w", "j_z", "j_t"]
LABEL_OF = {"g": 0, "q": 1, "w": 2, "z": 3, "t": 4}
N_UNIQUE, N_DUPLICATES = 300, 25


def openml_frame(seed: int = 0) -> pd.DataFrame:
    """300 distinct jets with features on very different scales, then 25 exact duplicates."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=np.arange(16) * 5.0, scale=np.arange(1, 17), size=(N_UNIQUE, 16))
    frame = pd.DataFrame(x, columns=FEATURES)
    frame["jet_type"] = rng.choice(list("gqwzt"), size=N_UNIQUE)
    frame.loc[0, "jet_type"] = "t"
    dups = frame.iloc[rng.choice(N_UNIQUE, N_DUPLICATES, replace=False)]
    return pd.concat([frame, dups], ignore_index=True)


def h5_frame(seed: int = 0) -> pd.DataFrame:
    """The same jets as ``t_allpar_new`` columns, plus extra j_* columns that differ per row."""
    base = openml_frame(seed)
    frame = pd.DataFrame(base[FEATURES].to_numpy(np.float32), columns=H5_FEATURES)
    for name, col in zip("gqwzt", H5_LABELS, strict=True):
        frame[col] = (base["jet_type"] == name).astype(np.float32)
    frame["j_pt"] = np.linspace(1.0, 2.0, len(frame))  # differs on duplicate rows: ignored
    frame["j_eta"] = 0.5
    frame["j_index"] = np.arange(len(frame))
    return frame


def reference(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MASE's recipe plus our 1/8 validation split, recomputed with sklearn."""
    x_tv, x_te, y_tv, y_te = train_test_split(x, y, test_size=0.2, random_state=42)
    scaler = StandardScaler().fit(x_tv)
    x_tr, x_va, y_tr, y_va = train_test_split(x_tv, y_tv, test_size=0.125, random_state=42)
    return {
        "train": (scaler.transform(x_tr), y_tr),
        "val": (scaler.transform(x_va), y_va),
        "test": (scaler.transform(x_te), y_te),
    }


def assert_matches(ds, expected) -> None:
    for part, (x, y) in expected.items():
        split = ds.split(part)
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        np.testing.assert_allclose(split.x, x, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(split.y, y)


def openml_reference(frame: pd.DataFrame):
    unique = frame[[*FEATURES, "jet_type"]].drop_duplicates()
    y = unique["jet_type"].map(LABEL_OF).to_numpy()
    return reference(unique[FEATURES].to_numpy(), y)


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_openml_round_trip(tmp_path: Path, suffix: str) -> None:
    frame = openml_frame()
    path = tmp_path / f"jets{suffix}"
    frame.to_parquet(path) if suffix == ".parquet" else frame.to_csv(path, index=False)

    ds = load_jsc_openml(path)

    assert len(frame) == N_UNIQUE + N_DUPLICATES
    assert len(ds.train) + len(ds.val) + len(ds.test) == N_UNIQUE
    assert (len(ds.train), len(ds.val), len(ds.test)) == (210, 30, 60)
    assert ds.notes["duplicates_dropped"] == str(N_DUPLICATES)
    assert ds.num_classes == 5 and ds.class_names == ("g", "q", "w", "z", "t")
    assert ds.feature_shape == (16,)
    # CSV round-trips floats through text; parquet is exact. Both within float32 precision.
    assert_matches(ds, openml_reference(pd.read_csv(path) if suffix == ".csv" else frame))
    counts = np.bincount(np.concatenate([ds.train.y, ds.val.y, ds.test.y]), minlength=5)
    expected = frame.drop_duplicates()["jet_type"].map(LABEL_OF).value_counts()
    assert counts.tolist() == [int(expected.get(i, 0)) for i in range(5)]


def test_openml_row_with_t_gets_label_4(tmp_path: Path) -> None:
    frame = openml_frame()
    path = tmp_path / "jets.parquet"
    frame.to_parquet(path)
    ds = load_jsc_openml(path)
    unique = frame.drop_duplicates()
    scaler = StandardScaler().fit(
        train_test_split(unique[FEATURES].to_numpy(), test_size=0.2, random_state=42)[0]
    )
    row0 = scaler.transform(frame.loc[[0], FEATURES].to_numpy())  # jet_type 't'
    xs = np.concatenate([ds.train.x, ds.val.x, ds.test.x])
    ys = np.concatenate([ds.train.y, ds.val.y, ds.test.y])
    hit = np.flatnonzero(np.abs(xs - row0).max(axis=1) < 1e-4)
    assert len(hit) == 1 and ys[hit[0]] == 4


def test_scaler_is_fitted_on_train_and_val_only(tmp_path: Path) -> None:
    path = tmp_path / "jets.parquet"
    openml_frame().to_parquet(path)
    ds = load_jsc_openml(path)
    fit_part = np.concatenate([ds.train.x, ds.val.x]).astype(np.float64)
    np.testing.assert_allclose(fit_part.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(fit_part.std(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(ds.train.x.mean(axis=0), 0.0, atol=0.25)
    np.testing.assert_allclose(ds.train.x.std(axis=0), 1.0, atol=0.15)
    # The test split did not take part: its mean is not zeroed.
    assert np.abs(ds.test.x.mean(axis=0)).max() > 1e-3


def test_calibration_is_a_seeded_subset_of_train(tmp_path: Path) -> None:
    path = tmp_path / "jets.parquet"
    openml_frame().to_parquet(path)
    ds = load_jsc_openml(path)
    expected = calibration_subset(ds.train, 512, seed=42)
    assert len(ds.calibration) == len(ds.train)  # 210 < 512: all of train
    np.testing.assert_array_equal(ds.calibration.x, expected.x)


def test_same_features_with_different_labels_are_not_duplicates(tmp_path: Path) -> None:
    frame = openml_frame()
    twin = frame.iloc[[1]].copy()
    twin["jet_type"] = "z" if twin["jet_type"].iloc[0] != "z" else "g"
    path = tmp_path / "jets.parquet"
    pd.concat([frame, twin], ignore_index=True).to_parquet(path)
    ds = load_jsc_openml(path)
    assert len(ds.train) + len(ds.val) + len(ds.test) == N_UNIQUE + 1


def write_h5(frame: pd.DataFrame, path: Path, layout: str) -> None:
    if layout in ("fixed", "table"):
        frame.to_hdf(path, key="t_allpar_new", format=layout)
    elif layout == "compound":  # the original hls4ml files, as MASE reads them
        with h5py.File(path, "w") as handle:
            handle["t_allpar_new"] = frame.to_records(index=False)
    else:  # a group holding one 1-D dataset per column
        with h5py.File(path, "w") as handle:
            group = handle.create_group("t_allpar_new")
            for col in frame.columns:
                group[col] = frame[col].to_numpy()


@pytest.mark.parametrize("layout", ["fixed", "table", "compound", "group"])
def test_h5_round_trip(tmp_path: Path, layout: str) -> None:
    frame = h5_frame()
    path = tmp_path / "jets.h5"
    write_h5(frame, path, layout)

    ds = load_jsc_h5(path)

    unique = frame[[*H5_FEATURES, *H5_LABELS]].drop_duplicates()
    assert len(unique) == N_UNIQUE  # j_pt / j_index differ but are not part of a row
    assert len(ds.train) + len(ds.val) + len(ds.test) == N_UNIQUE
    y = unique[H5_LABELS].to_numpy().argmax(axis=1)
    assert_matches(ds, reference(unique[H5_FEATURES].to_numpy(), y))
    assert ds.notes["format"] == "jsc-h5"


def test_h5_one_hot_t_gets_label_4_and_lowercase_zlogz_works(tmp_path: Path) -> None:
    frame = h5_frame().rename(columns={"j_zlogZ": "j_zlogz"})
    path = tmp_path / "jets.h5"
    frame.to_hdf(path, key="t_allpar_new")
    ds = load_jsc_h5(path)
    xs = np.concatenate([ds.train.x, ds.val.x, ds.test.x])
    ys = np.concatenate([ds.train.y, ds.val.y, ds.test.y])
    assert frame.loc[0, "j_t"] == 1.0
    unique = frame[[*frame.columns[:21]]].drop_duplicates()
    scaler = StandardScaler().fit(
        train_test_split(unique.iloc[:, :16].to_numpy(), test_size=0.2, random_state=42)[0]
    )
    row0 = scaler.transform(frame.iloc[[0], :16].to_numpy())
    hit = np.flatnonzero(np.abs(xs - row0).max(axis=1) < 1e-4)
    assert len(hit) == 1 and ys[hit[0]] == 4


def test_openml_and_h5_agree(tmp_path: Path) -> None:
    openml = tmp_path / "jets.parquet"
    openml_frame().to_parquet(openml)
    h5 = tmp_path / "jets.h5"
    h5_frame().to_hdf(h5, key="t_allpar_new")
    a, b = load_jsc_openml(openml), load_jsc_h5(h5)
    np.testing.assert_array_equal(a.test.y, b.test.y)
    np.testing.assert_allclose(a.test.x, b.test.x, atol=1e-4)  # h5 stored float32


# --- errors -----------------------------------------------------------------------------


def _raises(call, *fragments: str) -> DataError:
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_openml_missing_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "jets.parquet"
    openml_frame().drop(columns=["multiplicity", "jet_type"]).to_parquet(path)
    _raises(lambda: load_jsc_openml(path), "'multiplicity'", "'jet_type'", "hls4ml_lhc_jets_hlf")


def test_openml_unknown_jet_type(tmp_path: Path) -> None:
    frame = openml_frame()
    frame.loc[5, "jet_type"] = "h"
    path = tmp_path / "jets.csv"
    frame.to_csv(path, index=False)
    _raises(lambda: load_jsc_openml(path), "'h'", "'g', 'q', 'w', 'z', 't'")


def test_openml_nan_feature(tmp_path: Path) -> None:
    frame = openml_frame()
    frame.loc[3, "mass_mmdt"] = np.nan
    path = tmp_path / "jets.parquet"
    frame.to_parquet(path)
    _raises(lambda: load_jsc_openml(path), "'mass_mmdt'", "NaN")


def test_h5_missing_label_column(tmp_path: Path) -> None:
    path = tmp_path / "jets.h5"
    h5_frame().drop(columns=["j_t"]).to_hdf(path, key="t_allpar_new")
    _raises(lambda: load_jsc_h5(path), "'j_t'", "t_allpar_new")


def test_h5_missing_table_lists_keys(tmp_path: Path) -> None:
    path = tmp_path / "jets.h5"
    h5_frame().to_hdf(path, key="other")
    _raises(lambda: load_jsc_h5(path), "no 't_allpar_new' table", "'other'")


@pytest.mark.parametrize("row", [[0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0.5, 0.5, 0, 0, 0]])
def test_h5_rows_that_are_not_one_hot(tmp_path: Path, row: list[float]) -> None:
    frame = h5_frame()
    frame.loc[7, H5_LABELS] = row
    path = tmp_path / "jets.h5"
    frame.to_hdf(path, key="t_allpar_new")
    _raises(lambda: load_jsc_h5(path), "not one-hot", "row 7")


def test_h5_not_an_hdf5_file(tmp_path: Path) -> None:
    path = tmp_path / "jets.h5"
    path.write_text("zlogz,jet_type\n1,g\n")
    _raises(lambda: load_jsc_h5(path), "cannot read as HDF5")


def test_missing_file(tmp_path: Path) -> None:
    _raises(lambda: load_jsc_h5(tmp_path / "nope.h5"), "nope.h5", "no such file")
