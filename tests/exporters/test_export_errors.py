"""torch export failures: one line naming the problem and the fix, the right exit code, no dumps."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import onnxopt
from onnxopt.cli import main
from onnxopt.errors import ExportError, UsageError
from onnxopt.exporters.torch_onnx import export_module

FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn


    class BakedBatch(nn.Module):
        '''torch.export refuses the branch; TorchScript traces int(shape[0]) as the constant 4.'''

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = self.fc(x)
            if x.sum() > -1e9:
                return y.view(int(y.shape[0]), -1)
            return y


    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            if x.sum() > -1e9:
                return self.fc(x)
            return -self.fc(x)


    def baked_batch():
        return BakedBatch()


    def data_dependent():
        return DataDependent()


    def linear():
        return nn.Linear(4, 3)
    """
)


@pytest.fixture()
def factories(tmp_path, monkeypatch):
    """A module of factories importable as ``export_factories`` (in-process and in a child)."""
    (tmp_path / "export_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    sys.modules.pop("export_factories", None)
    return importlib.import_module("export_factories")


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_graph_with_a_baked_batch_size_is_one_clear_error(factories, tmp_path, capfd):
    with pytest.raises(ExportError) as info:
        export_module(factories.baked_batch(), (4,), tmp_path / "m.onnx")
    text = _one_line(info)
    assert text.startswith("the exported graph fixes the batch size at 4: onnxruntime fails at")
    assert "batch 1" in text and "Reshape" in text
    assert "int(x.shape[0])" in text and "flatten(1) or reshape(x.shape[0], -1)" in text
    assert info.value.exit_code == 1
    assert not (tmp_path / "m.onnx").exists()
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # neither torch's graph dumps nor onnxruntime's error log


class _FixedReshape(nn.Module):
    """Runs at the traced batch size only: it fails in torch itself at batch 1."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x).reshape(4, 3)


def test_model_failing_in_torch_at_another_batch_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as info:
        export_module(_FixedReshape().eval(), (4,), tmp_path / "m.onnx")
    text = _one_line(info)
    assert text.startswith("the model fails in torch on an input of shape (1, 4) (RuntimeError:")
    assert "must accept any batch size" in text and "flatten(1)" in text
    assert info.value.exit_code == 2


def test_wrong_input_shape_is_a_usage_error_before_any_exporter(tmp_path, monkeypatch):
    import onnxopt.exporters.torch_onnx as torch_onnx

    def never(*args, **kwargs):
        raise AssertionError("no exporter should run on an input the model refuses")

    monkeypatch.setattr(torch_onnx, "_export_graph", never)
    with pytest.raises(UsageError) as info:
        export_module(nn.Linear(4, 3), (5,), tmp_path / "m.onnx")
    text = _one_line(info)
    assert "input of shape (4, 5)" in text and "mat1 and mat2 shapes cannot be multiplied" in text
    assert "is the per-sample input shape (5,) right?" in text


class _Unsupported(nn.Module):
    def forward(self, x):
        return torch.linalg.svdvals(x.reshape(x.shape[0], 2, 2))


def test_both_exporters_failing_names_both_real_causes(tmp_path, capfd):
    with pytest.raises(ExportError) as info:
        export_module(_Unsupported(), (4,), tmp_path / "m.onnx")
    text = _one_line(info)
    assert text.startswith("both exporters failed: dynamo (DispatchError: No ONNX function found")
    assert (
        "torchscript (UnsupportedOperatorError: Exporting the operator 'aten::linalg_svdvals'"
        in text
    )
    assert "step 3/3" not in text and "Next steps" not in text
    assert info.value.exit_code == 1
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # the TorchScript exporter's IR dump goes to fd 1


def test_debug_lets_the_exporters_speak(factories, tmp_path, capfd):
    res = export_module(factories.data_dependent(), (4,), tmp_path / "m.onnx", debug=True)
    assert res.exporter == "torchscript"
    out, err = capfd.readouterr()
    assert "def forward" in out + err  # torch's own graph dump of the failed dynamo attempt


def test_cli_wrong_input_shape_exits_2_with_one_line(factories, tmp_path):
    result = CliRunner().invoke(
        main,
        ["export", "--factory", "export_factories:linear", "--input-shape", "5"]
        + ["-o", str(tmp_path / "m.onnx")],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the model fails in torch on an input")


def _cli(tmp_path, factory: str) -> subprocess.CompletedProcess:
    """The real command in a child process: its file descriptors are the terminal's."""
    paths = [str(tmp_path), str(Path(onnxopt.__file__).parents[1])]  # this onnxopt, not another
    args = ["export", "--factory", f"export_factories:{factory}", "--input-shape", "4"]
    return subprocess.run(
        [sys.executable, "-m", "onnxopt", *args, "-o", str(tmp_path / "m.onnx")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        timeout=300,
        check=False,
    )


def test_cli_fallback_prints_one_line_with_the_reason_and_nothing_on_stderr(factories, tmp_path):
    done = _cli(tmp_path, "data_dependent")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(done.stdout.strip().splitlines()) == 1
    assert "torchscript exporter (dynamo failed: GuardOnDataDependentSymNode:" in done.stdout


def test_cli_baked_batch_exits_1_with_one_line(factories, tmp_path):
    done = _cli(tmp_path, "baked_batch")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: the exported graph fixes the batch size at 4")
