"""Fixtures of the reliability tests (helpers are in reliability_helpers.py)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from onnxopt.cli import main


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    """``cli(*args)`` run in tmp_path: (exit code, stdout, stderr); never an uncaught exception."""
    monkeypatch.chdir(tmp_path)

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            result.exception
        )
        return result.exit_code, result.stdout, result.stderr

    return run
