"""click's usage errors, recipes without bundled data, weights files and the evaluate table."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from onnxopt.cli import main


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


SPLIT_ERROR = (
    "error: invalid value for '--split': 'bogus' is not one of 'train', 'val', 'test', "
    "'calibration' (see 'onnxopt evaluate --help')"
)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["quantize", "m.onnx"], "missing option '-o' / '--output' (see 'onnxopt quantize --"),
        (["evaluate", "m.onnx", "--split", "bogus"], SPLIT_ERROR),
        (["evaluate"], "error: missing argument 'MODEL' (see 'onnxopt evaluate --help')"),
        (["export", "--opset", "x", "-o", "o.onnx"], "not a valid integer (see 'onnxopt export"),
        (["bogus"], "error: no such command 'bogus' (see 'onnxopt --help')"),
        (["--bogus"], "error: no such option '--bogus' (see 'onnxopt --help')"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_with_exit_2(args, message):
    result = _invoke(*args)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and "Usage:" not in result.output
    assert message in result.output


def test_usage_error_from_the_console_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "onnxopt", "evaluate", "m.onnx", "--split", "bogus"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [SPLIT_ERROR]


def test_help_and_version_still_work():
    for args in (["--help"], ["quantize", "--help"], ["evaluate", "-h"]):
        result = _invoke(*args)
        assert result.exit_code == 0 and "Usage:" in result.output
    assert _invoke("--version").exit_code == 0
    bare = _invoke()  # no command: the help, exit 2 as click does
    assert bare.exit_code == 2 and "Commands:" in bare.output


@pytest.mark.parametrize("recipe", ["jsc-tiny", "jsc-s"])
def test_jsc_recipe_without_data_names_the_recipe_and_the_formats(tmp_path, recipe):
    result = _invoke("train", recipe, "-o", tmp_path / "w.pt")
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert f"recipe {recipe!r}" in result.output and "pass --data" in result.output
    assert "hls4ml_lhc_jets_hlf" in result.output and "t_allpar_new" in result.output
    assert not (tmp_path / "w.pt").exists()


def test_bundled_default_dataset_is_used(tmp_path):
    result = _invoke("train", "digits-mlp", "--epochs", "1", "-o", tmp_path / "w.pt")
    assert result.exit_code == 0, result.output
    assert "trained digits-mlp on digits" in result.output


def test_jsc_recipe_trains_on_a_given_jsc_file(tmp_path, jsc_parquet):
    result = _invoke("train", "jsc-tiny", "--data", jsc_parquet, "--epochs", "1", "-o",
                     tmp_path / "w.pt")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained jsc-tiny on jsc" in result.output


def _weights_files(tmp_path):
    import torch

    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    array = tmp_path / "array.npy"
    np.save(array, np.zeros(3))
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    return text, array, module


def test_weights_that_are_not_a_state_dict_say_what_was_expected(tmp_path):
    text, array, module = _weights_files(tmp_path)
    for path in (text, array):
        result = _invoke("export", "--weights", path, "-o", tmp_path / "x.onnx")
        assert result.exit_code == 2 and result.output.count("\n") == 1
        assert f"{path} is not a torch weights file" in result.output
        assert "torch.save(model.state_dict()" in result.output
        assert "(101)" not in result.output
    result = _invoke("export", "--weights", module, "-o", tmp_path / "x.onnx")
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "holds a pickled torch.nn.modules.linear.Linear" in result.output
    assert "torch.save(model.state_dict()" in result.output


def test_evaluate_table_names_the_throughput_batch_size(tmp_path, exported_recipe):
    model = exported_recipe("digits-mlp")
    args = ["evaluate", model, "--batch-size", "1", "--batch-size", "32"]
    result = _invoke(*args)
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("throughput"))
    assert line.startswith("throughput batch 32 ") and "samples/s" in line
    report = json.loads(_invoke(*args, "--json").output)
    assert report["throughput_batch_size"] == 32
