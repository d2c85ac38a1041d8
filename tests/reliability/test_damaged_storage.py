"""Issue 14 items 3 and 8: damaged, empty or foreign study storage, and readers that never write.

Every damage is one ``error:`` line (exit 2) from ``status`` and from ``search --resume``,
naming the file, the damaged record and the recovery; the recovery it prints works. An empty
or foreign store makes ``--resume`` refuse unless ``--restart`` is given. ``status`` opens
the storage read-only: it neither locks nor repairs (the run directory is byte-identical).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_helpers import CHEAP_EVALUATION, assert_one_line

from onnxopt.optimizer.search.study import JOURNAL_FILE

SEARCH = f"""
[search.quantization.by_type.linear]
data_in_width = [4, 8]
weight_width = [2, 4, 8]
{CHEAP_EVALUATION}[search.strategy]
sampler = "brute-force"
n_trials = 4
[search.metrics.accuracy]
[search.metrics.size]
"""


@pytest.fixture(scope="module")
def finished(exported_recipe, tmp_path_factory) -> Path:
    """A finished 4-trial search: its config and run directory (journal storage). It runs in
    a process of its own, which has ended: the trials a damage leaves RUNNING are a dead
    worker's, as after a crash."""
    folder = tmp_path_factory.mktemp("damage")
    (folder / "s.toml").write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{SEARCH}')
    cmd = [sys.executable, "-m", "onnxopt", "search", "s.toml", "--run-dir", "run",
           "--no-progress", "--no-export"]  # fmt: skip
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return folder


@pytest.fixture()
def run(finished, tmp_path) -> Path:
    shutil.copyfile(finished / "s.toml", tmp_path / "s.toml")
    return Path(shutil.copytree(finished / "run", tmp_path / "run"))


def _lines(journal: Path) -> list[bytes]:
    return journal.read_bytes().split(b"\n")[:-1]


def _write(journal: Path, lines: list[bytes], tail: bytes = b"") -> None:
    journal.write_bytes(b"".join(line + b"\n" for line in lines) + tail)


def garbled(lines):  # a line that is not UTF-8
    lines[10] = lines[10][:5] + b"\xff\xfe" + lines[10][7:]
    return 11


def nul_block(lines):  # what a crashed file system leaves
    lines[12] = b"\x00" * len(lines[12])
    return 13


def bit_flips(lines):  # a record that is no longer JSON
    lines[14] = lines[14].replace(b'":', b'";', 1)
    return 15


def bad_last_line(lines):
    lines.append(b"this is not a record")
    return len(lines)


def unknown_op_code(lines):  # JSON, but nothing Optuna can replay ("Should not reach.")
    lines.insert(20, json.dumps({"op_code": 99, "worker_id": "x"}).encode())
    return 21


@pytest.mark.parametrize("damage", [garbled, nul_block, bit_flips, bad_last_line, unknown_op_code])
def test_a_damaged_journal_is_one_line_naming_the_record_and_the_recovery(cli, run, damage):
    journal = run / JOURNAL_FILE
    lines = _lines(journal)
    record = damage(lines)
    _write(journal, lines)
    for command in (("status", run), ("search", "s.toml", "--run-dir", run, "--resume")):
        line = assert_one_line(cli(*command), str(journal), f"damaged at record {record} ",
                               "truncate -s", "--resume", "--restart")  # fmt: skip
    # the printed recovery works: cut the file where it says, resume, and the search finishes
    offset = int(re.search(r"truncate -s (\d+) ", line).group(1))
    assert offset == sum(len(x) + 1 for x in lines[: record - 1])
    kept = re.search(r"records before it hold study 'onnxopt-search' with ([^.]+)\.", line)
    assert kept, line
    with open(journal, "r+b") as f:
        f.truncate(offset)
    code, _, err = cli("search", "s.toml", "--run-dir", run, "--resume", "--no-progress",
                       "--no-export", "--json")  # fmt: skip
    assert code == 0, err
    code, out, _ = cli("status", run, "--json")
    assert code == 0 and json.loads(out)["done"]


def test_a_folder_in_place_of_the_journal(cli, run):
    journal = run / JOURNAL_FILE
    journal.unlink()
    journal.mkdir()
    for command in (("status", run), ("status", journal),
                    ("search", "s.toml", "--run-dir", run, "--resume")):  # fmt: skip
        assert_one_line(cli(*command), f"{JOURNAL_FILE} is a folder, not a journal file")


def test_resume_on_an_empty_journal_refuses_unless_restart(cli, run):
    journal = run / JOURNAL_FILE
    journal.write_bytes(b"")
    assert_one_line(cli("search", "s.toml", "--run-dir", run, "--resume"),
                    "--resume:", "holds no search named 'onnxopt-search'", "the file is empty",
                    "--restart")  # fmt: skip
    assert journal.read_bytes() == b""  # refused: nothing written
    code, _, err = cli("search", "s.toml", "--run-dir", run, "--resume", "--restart",
                       "--no-progress", "--no-export")  # fmt: skip
    assert code == 0, err
    (previous,) = run.glob("previous-*")
    assert (previous / JOURNAL_FILE).read_bytes() == b""  # moved aside, not deleted


def test_resume_on_a_foreign_journal_names_what_it_holds(cli, run):
    assert_one_line(cli("search", "s.toml", "--run-dir", run, "--resume", "--study", "other"),
                    "holds no search named 'other'", "it holds 'onnxopt-search'")  # fmt: skip


def test_a_half_written_record_is_cut_and_the_lost_trial_named(cli, run):
    journal = run / JOURNAL_FILE
    lines = _lines(journal)
    last = lines.pop()  # the last write: trial 3 finished
    _write(journal, lines, tail=last[: last.index(b'"state"')])  # cut after its trial id
    code, out, err = cli("search", "s.toml", "--run-dir", run, "--resume", "--no-progress",
                         "--no-export", "--json")  # fmt: skip
    assert code == 0, err
    assert "note: study.journal: cut a half-written last record" in err
    assert "an update of trial 3, which is lost" in err
    report = json.loads(out)
    assert report["recovered_trials"] == 1  # trial 3 was left RUNNING, failed and re-run


def test_status_never_writes_to_the_run_directory(cli, run):
    """status opened a lock file and repaired the journal: a reader must not write."""
    (run / "study.journal.lock").unlink()
    (run / "study.journal.slots.lock").unlink()
    journal = run / JOURNAL_FILE
    lines = _lines(journal)
    _write(journal, lines, tail=b'{"op_code": 5, "worker')  # a record being written
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in run.rglob("*") if p.is_file()}  # fmt: skip
    code, out, err = cli("status", run, "--json")
    assert code == 0, err
    assert json.loads(out)["counts"]["complete"] == 4
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in run.rglob("*") if p.is_file()}  # fmt: skip
    assert after == before


def test_a_damaged_sqlite_database_is_one_line(cli, run, tmp_path):
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    code, _, err = cli("search", "s.toml", "--run-dir", tmp_path / "sq", "--storage", url,
                       "--no-progress", "--no-export")  # fmt: skip
    assert code == 0, err
    with sqlite3.connect(db) as con:
        (pages,) = con.execute("PRAGMA page_count").fetchone()
        (size,) = con.execute("PRAGMA page_size").fetchone()
    data = bytearray(db.read_bytes())
    for page in range(1, pages):  # every page header but the first: "disk image is malformed"
        data[page * size : page * size + 8] = b"\xa5" * 8
    db.write_bytes(bytes(data))
    for command in (("status", url), ("select", url, "--run-dir", tmp_path / "sq", "--rule",
                                      "max accuracy"),
                    ("search", "s.toml", "--run-dir", tmp_path / "sq", "--storage", url,
                     "--resume")):  # fmt: skip
        assert_one_line(cli(*command), f"the study storage {url} failed",
                        "restore it from a backup")  # fmt: skip


def test_resume_on_an_empty_sqlite_file_refuses_and_writes_nothing(cli, run, tmp_path):
    db = tmp_path / "e.db"
    db.write_bytes(b"")
    assert_one_line(cli("search", "s.toml", "--run-dir", tmp_path / "r", "--storage",
                        f"sqlite:///{db}", "--resume"), "holds no search")  # fmt: skip
    assert db.read_bytes() == b""


def test_status_of_a_journal_a_kill_left_half_written_counts_what_is_whole(cli, run):
    """A reader skips the half-written last record (as Optuna's reader does)."""
    journal = run / JOURNAL_FILE
    lines = _lines(journal)
    last = lines.pop()
    _write(journal, lines, tail=last[:10])
    code, out, err = cli("status", run, "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["counts"]["complete"] == 3 and status["counts"]["running"] == 1
    assert journal.read_bytes().endswith(last[:10])  # not cut by a reader
