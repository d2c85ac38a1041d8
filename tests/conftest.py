"""Shared fixtures: the bundled dataset and trained, exported reference models (cached per run).

Also the suite's gate: a run in which no test passed (everything skipped or deselected) fails
with exit status 5, so CI never reports success for tests that did not run.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from onnxopt.data.digits import load_digits


class _PassGate:
    """Counts passed tests; a run that is green only because nothing passed exits 5."""

    def __init__(self) -> None:
        self.passed = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and report.passed and not hasattr(report, "wasxfail"):
            self.passed += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if exitstatus != pytest.ExitCode.OK or session.config.option.collectonly:
            return
        if self.passed == 0:
            session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED
            reporter = session.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line("error: no test passed (all skipped or deselected)", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_PassGate(), "onnxopt-pass-gate")


@pytest.fixture(scope="session")
def digits():
    return load_digits()


@pytest.fixture(scope="session")
def trained_recipe(digits):
    """``trained_recipe(name)`` trains a digits recipe once per test session (seed 0)."""
    from onnxopt.models.training import train

    @functools.cache
    def get(name: str):
        return train(name, digits, seed=0, progress=False)

    return get


@pytest.fixture(scope="session")
def exported_recipe(trained_recipe, tmp_path_factory):
    """``exported_recipe(name)`` is the path of the trained recipe exported to ONNX (opset 21)."""
    from onnxopt.exporters.torch_onnx import export_module

    folder = tmp_path_factory.mktemp("exported")

    @functools.cache
    def get(name: str) -> Path:
        trained = trained_recipe(name)
        return export_module(trained.module, trained.input_shape, folder / f"{name}.onnx").path

    return get


@pytest.fixture(scope="session")
def jsc_parquet(tmp_path_factory) -> Path:
    """A small file in the OpenML ``hls4ml_lhc_jets_hlf`` format whose classes are learnable.

    The real jet data cannot be downloaded here; 1,500 synthetic jets with class-dependent
    feature means stand in for it (same columns, same ``jet_type`` values).
    """
    import numpy as np
    import pandas as pd

    from onnxopt.data.jsc import OPENML_FEATURES

    rng = np.random.default_rng(7)
    labels = rng.choice(list("gqwzt"), size=1500)
    centers = rng.normal(scale=2.0, size=(5, len(OPENML_FEATURES)))
    x = centers[np.array(["gqwzt".index(c) for c in labels])]
    frame = pd.DataFrame(x + rng.normal(size=x.shape), columns=list(OPENML_FEATURES))
    frame["jet_type"] = labels
    path = tmp_path_factory.mktemp("jsc") / "hls4ml_lhc_jets_hlf.parquet"
    frame.to_parquet(path)
    return path


@pytest.fixture
def config(exported_recipe, tmp_path):
    """``config(body)`` writes a search TOML for the exported digits-mlp and returns its path."""

    def write(body: str) -> Path:
        path = tmp_path / "s.toml"
        path.write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{body}')
        return path

    return write
