"""Issue 14 item 2: results are never silently replaced.

A refused search changes nothing on disk; a run directory's base model is written once, with
what it was made from and its sha256 (``base.json``), and checked before any trial or export
uses it: another config's model is refused, and so is a base (or a user's ONNX file) that is
not the model the stored study searched.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import onnx
import pytest
from reliability_helpers import CHEAP_EVALUATION, assert_one_line

from onnxopt.optimizer.search.storage import open_storage, stored_studies
from onnxopt.optimizer.search.study import JOURNAL_FILE, load_study

SPACE = f"""
[search.quantization.by_type.linear]
weight_width = [4, 8]
{CHEAP_EVALUATION}[search.strategy]
sampler = "brute-force"
n_trials = 2
[search.metrics.accuracy]
[search.metrics.size]
"""
MLP = '[model]\nrecipe = "digits-mlp"\nepochs = 1\n' + SPACE
CNN = '[model]\nrecipe = "digits-cnn"\nepochs = 1\n' + SPACE.replace("linear", "conv")


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes (and every folder)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        out[key] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory) -> Path:
    """A finished search of a recipe (digits-mlp, 1 epoch): run/ holds base.onnx, base.json."""
    from click.testing import CliRunner

    from onnxopt.cli import main

    folder = tmp_path_factory.mktemp("mlp")
    (folder / "mlp.toml").write_text(MLP)
    done = CliRunner().invoke(main, ["search", str(folder / "mlp.toml"), "--run-dir",
                                     str(folder / "run"), "--no-progress"])  # fmt: skip
    assert done.exit_code == 0, done.output
    return folder / "run"


@pytest.fixture()
def run(mlp_run, tmp_path) -> Path:
    """A copy of the finished search for one test to change."""
    return Path(shutil.copytree(mlp_run, tmp_path / "run"))


def test_the_base_model_is_recorded_with_its_source_and_sha256(run):
    record = json.loads((run / "base.json").read_text())
    assert record["source"]["recipe"] == "digits-mlp" and record["source"]["epochs"] == 1
    assert record["sha256"] == hashlib.sha256((run / "base.onnx").read_bytes()).hexdigest()
    study = load_study(str(run / JOURNAL_FILE))
    stored = study.user_attrs["base_sha256"]
    assert stored == hashlib.sha256(onnx.load(run / "base.onnx").SerializeToString()).hexdigest()


def test_a_refused_second_search_changes_nothing_on_disk(cli, run, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(MLP.replace("epochs = 1", "epochs = 2"))
    before = snapshot(run)
    line = assert_one_line(cli("search", other, "--run-dir", run, "--no-progress"),
                           "already exists", "--resume", "--restart")  # fmt: skip
    assert "onnxopt-search" in line
    assert snapshot(run) == before


def test_a_refused_search_trains_and_writes_no_base_model(cli, exported_recipe, tmp_path):
    """The first search read an ONNX file (no base.onnx); a recipe config in its run directory
    is refused before it trains or writes anything."""
    first = tmp_path / "onnx.toml"
    first.write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{SPACE}')
    assert cli("search", first, "--run-dir", "run", "--no-progress", "--no-export")[0] == 0
    before = snapshot(tmp_path / "run")
    (tmp_path / "mlp.toml").write_text(MLP)
    assert_one_line(cli("search", "mlp.toml", "--run-dir", "run"), "already exists")
    assert snapshot(tmp_path / "run") == before
    assert not (tmp_path / "run" / "base.onnx").exists()


def test_another_models_config_in_the_run_directory_is_refused(cli, run, tmp_path):
    """A CNN config with --study cnn in the MLP's run directory searched the MLP's cached
    base.onnx; now it stops with one line, before training, and adds no study."""
    (tmp_path / "cnn.toml").write_text(CNN)
    before = snapshot(run)
    assert_one_line(
        cli("search", "cnn.toml", "--run-dir", run, "--study", "cnn", "--no-progress"),
        "base.onnx is the base model of another config", "recipe 'digits-mlp'",
        "recipe 'digits-cnn'", "--restart",
    )  # fmt: skip
    assert snapshot(run) == before
    assert stored_studies(open_storage(str(run / JOURNAL_FILE), read_only=True)) == [
        "onnxopt-search"
    ]


def test_restart_moves_the_previous_search_aside(cli, run, tmp_path):
    (tmp_path / "cnn.toml").write_text(CNN)
    before = snapshot(run)
    code, _, err = cli("search", "cnn.toml", "--run-dir", run, "--restart", "--no-progress",
                       "--no-export")  # fmt: skip
    assert code == 0, err
    (previous,) = run.glob("previous-*")
    moved = {k: v for k, v in before.items() if k != "latency.lock"}  # a lock stays
    assert snapshot(previous) == moved  # every file of the previous search, unchanged
    assert json.loads((run / "base.json").read_text())["source"]["recipe"] == "digits-cnn"


def test_select_refuses_a_base_model_that_is_not_the_studys(cli, run, exported_recipe):
    """base.onnx replaced by another model (with a record that matches it, as an earlier
    onnxopt could leave it): select exported 'trial 0' built on the wrong base, exit 0."""
    other = onnx.load(exported_recipe("digits-mlp"))
    onnx.save(other, run / "base.onnx")
    record = json.loads((run / "base.json").read_text())
    record["sha256"] = hashlib.sha256((run / "base.onnx").read_bytes()).hexdigest()
    (run / "base.json").write_text(json.dumps(record))
    assert_one_line(cli("select", run, "--rule", "max accuracy"),
                    "the base model differs from the stored study's")  # fmt: skip
    assert not (run / "selected").exists()


def test_a_changed_base_file_is_refused_by_search_and_select(cli, run, exported_recipe):
    shutil.copyfile(exported_recipe("digits-mlp"), run / "base.onnx")  # base.json not updated
    assert_one_line(cli("select", run, "--rule", "max accuracy"), "base.onnx changed since")
    config = run.parent / "mlp.toml"
    config.write_text(MLP)
    assert_one_line(cli("search", config, "--run-dir", run, "--resume", "--n-trials", "3"),
                    "base.onnx changed since", "--restart")  # fmt: skip


def test_select_refuses_a_changed_onnx_model_file(cli, exported_recipe, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copyfile(exported_recipe("digits-mlp"), model)
    (tmp_path / "s.toml").write_text(f'[model]\nonnx = "m.onnx"\n{SPACE}')
    assert cli("search", "s.toml", "--run-dir", "run", "--no-progress", "--no-export")[0] == 0
    changed = onnx.load(model)
    changed.graph.initializer[0].raw_data = bytes(len(changed.graph.initializer[0].raw_data))
    onnx.save(changed, model)
    assert_one_line(cli("select", "run", "--rule", "max accuracy"),
                    "the base model differs from the stored study's")  # fmt: skip
