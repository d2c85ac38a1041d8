"""Data and configs that do not fit, through the CLI: one ``error:`` line naming the fix, exit 2."""

from __future__ import annotations

import numpy as np
import onnx
import pandas as pd
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxopt.cli import main

RNG = np.random.default_rng(1)


def _mlp() -> onnx.ModelProto:
    """64 features -> Gemm 'fc1' (16) -> Relu -> Gemm 'fc2' (10 classes)."""
    inits = [
        numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32) * 0.1, name)
        for name, shape in (("w1", (64, 16)), ("w2", (16, 10)))
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    """``cli(*args)`` in tmp_path (holding the model ``m.onnx``): (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    onnx.save_model(_mlp(), str(tmp_path / "m.onnx"))

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result.exit_code, result.stdout, result.stderr

    return run


def assert_error(outcome, *fragments: str, code: int = 2) -> None:
    exit_code, _, err = outcome
    assert exit_code == code, err
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in line, line


def _features(n: int = 100) -> np.ndarray:
    return RNG.random((n, 64)).astype(np.float32)


# -- data -----------------------------------------------------------------------------------


def test_labels_beyond_the_model_classes(cli, tmp_path):
    np.savez(tmp_path / "d.npz", x=_features(150), y=np.arange(150) % 15)
    assert_error(
        cli("evaluate", "m.onnx", "--data", "d.npz", "--no-latency"),
        "model output 'y' scores 10 classes but the dataset has 15",
        "use data that matches the model",
    )


def test_nan_in_npz_names_file_count_and_columns(cli, tmp_path):
    x = _features()
    x[3, 5], x[40, 7], x[41, 5] = np.nan, np.inf, -np.inf
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(100) % 10)
    assert_error(
        cli("quantize", "m.onnx", "--data", "d.npz", "-o", "q.onnx"),
        "d.npz: 3 samples contain NaN or Inf (in feature columns 5, 7)",
        "clean or drop them",
    )


def test_nan_in_csv_names_the_column(cli, tmp_path):
    frame = pd.DataFrame(_features(), columns=[f"f{i}" for i in range(64)])
    frame.loc[[2, 9], "f13"] = np.nan
    frame["label"] = np.arange(100) % 10
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert_error(
        cli("evaluate", "m.onnx", "--data", "d.csv", "--no-latency"),
        "d.csv: 2 rows have NaN, Inf or empty values in columns 'f13'",
        "clean or drop those rows",
    )


def test_fractional_labels(cli, tmp_path):
    np.savez(tmp_path / "d.npz", x=_features(), y=np.linspace(0, 9, 100))
    assert_error(
        cli("evaluate", "m.onnx", "--data", "d.npz"),
        "labels must be integers 0..K-1",
        "set the task to regression (--task regression",
    )


def test_feature_shape_mismatch(cli, tmp_path):
    np.savez(tmp_path / "d.npz", x=RNG.random((100, 3, 4)), y=np.arange(100) % 10)
    assert_error(
        cli("quantize", "m.onnx", "--data", "d.npz", "-o", "q.onnx"),
        "dataset has 12 features per sample but model input 'x' expects 64",
    )


# -- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        (
            "[default]\nweight_width = 0\n",
            ["default.weight_width", "greater than or equal to 2", "(got 0)"],
        ),
        ("[default]\nweight_width = 1\n", ["default.weight_width", "(got 1)"]),
        (
            "[by_type.linear]\ndata_in_width = 33\n",
            ["by_type.linear.data_in_width", "less than or equal to 16", "(got 33)"],
        ),
        (
            "[default]\nwieght_width = 4\n",
            ["unknown key 'default.wieght_width'", "did you mean 'weight_width'"],
        ),
        (
            'storage = "pakced"\n',
            ["storage: Input should be 'container' or 'packed'", "did you mean 'packed'"],
        ),
        (
            '[default]\nweight_frac_width = "atuo"\n',
            ["should be a valid integer or 'auto' or 'NA'"],
        ),
        (
            "[by_name.fc3]\nweight_width = 4\n",
            ["by_name.fc3: no node 'fc3' in the model", "did you mean 'fc2', 'fc1'"],
        ),
        ("[default\nweight_width = 4\n", ["is not valid TOML"]),
    ],
)
def test_bad_quantization_configs(cli, tmp_path, toml, fragments):
    (tmp_path / "q.toml").write_text(toml)
    assert_error(cli("quantize", "m.onnx", "--config", "q.toml", "-o", "q.onnx"), *fragments)


def test_binary_config_file(cli, tmp_path):
    (tmp_path / "q.toml").write_bytes(b"\xff\xfe\x00binary")
    assert_error(
        cli("quantize", "m.onnx", "--config", "q.toml", "-o", "q.onnx"), "is not a text TOML file"
    )


@pytest.mark.parametrize(
    ("toml", "fragments"),
    [
        (
            "[layers.fc1]\nchannel_multiplier = 0.015625\n",
            ["0.015625 x 16 channels of group", "rounds to 0 channels", "use at least 0.03125"],
        ),
        (
            "[layers.fc1]\nchannel_multiplier = 0\n",
            ["is outside [0.015625, 16]", "pick a value in range"],
        ),
        ("[layers.fc1]\nchannel_multiplier = 64\n", ["multiplier 64.0 is outside"]),
        ('[layers.fc1]\nchannel_multiplier = 0.5\nmode = "bot"\n', ["did you mean 'both'"]),
        ("[layers.fc9]\nchannel_multiplier = 0.5\n", ["fc9", "did you mean"]),
    ],
)
def test_bad_width_configs(cli, tmp_path, toml, fragments):
    (tmp_path / "w.toml").write_text('refit = "none"\nimportance = "weight_norm"\n' + toml)
    assert_error(cli("scale", "m.onnx", "--config", "w.toml", "-o", "s.onnx"), *fragments)
