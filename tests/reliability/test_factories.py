"""Item 9: a factory is code (configs naming one must be trusted), but what it does wrong is one
line: it must return a torch ``nn.Module``, not exit, raise or return something else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reliability_helpers import assert_one_line

from onnxopt.errors import UsageError
from onnxopt.models.factory import load_factory


@pytest.mark.parametrize(
    ("factory", "fragments"),
    [
        ("sys:exit", ("factory 'sys:exit'", "exited", "torch nn.Module")),
        ("builtins:list", ("factory 'builtins:list'", "returned list", "torch nn.Module")),
        ("torch.nn:Linear", ("factory 'torch.nn:Linear'", "TypeError", "no arguments")),
        ("builtins:input", ("factory 'builtins:input'", "EOFError")),
    ],
)
def test_export_factory_that_does_not_return_a_module(cli, factory, fragments) -> None:
    outcome = cli("export", "--factory", factory, "--input-shape", "4", "-o", "f.onnx")
    assert_one_line(outcome, *fragments)
    assert not Path("f.onnx").exists()


def test_search_factory_that_exits(tmp_path: Path) -> None:
    """The search builds its base model with the same loader: SystemExit must not end it."""
    with pytest.raises(UsageError, match="exited"):
        load_factory("sys:exit")


def test_factory_weights_that_do_not_fit(tmp_path: Path, cli) -> None:
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "lin.pt")
    outcome = cli(
        "export", "--factory", "torch.nn:Identity", "--weights", "lin.pt", "--input-shape", "4",
        "-o", "f.onnx",
    )  # fmt: skip
    assert_one_line(outcome, "lin.pt", "does not fit", "torch.nn:Identity")
