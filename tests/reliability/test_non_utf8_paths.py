"""Item 8: file names that are not valid UTF-8 (Linux allows any bytes but '/' and NUL).

The CLI gets them as real argv bytes, so these tests run ``python -m onnxopt`` in a
subprocess: CliRunner only passes str.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from reliability_helpers import gemm_model

import onnxopt

ROOT = Path(onnxopt.__file__).resolve().parents[1]


def run(*args: str | bytes, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "onnxopt", *args], cwd=cwd, env=env, capture_output=True
    )


@pytest.fixture()
def odd(tmp_path: Path) -> bytes:
    """A valid model saved under the name b'm\\xff.onnx' (not UTF-8) and its data."""
    name = b"m\xff.onnx"
    with open(os.path.join(os.fsencode(tmp_path), name), "wb") as f:
        f.write(gemm_model(4, 3).SerializeToString())
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(30, 4)), y=rng.integers(0, 3, 30))
    return name


def test_evaluate_a_model_whose_name_is_not_utf8(tmp_path: Path, odd: bytes) -> None:
    done = run("evaluate", odd, "--data", "d.npz", "--no-latency", cwd=tmp_path)
    err = done.stderr.decode("utf-8", "backslashreplace").strip()
    assert done.returncode == 2, err
    assert err.startswith("error: ") and "\n" not in err, err
    assert "m\\xff.onnx" in err and "UTF-8" in err and "rename" in err, err


def test_quantize_still_reads_and_writes_such_names(tmp_path: Path, odd: bytes) -> None:
    done = run("quantize", odd, "--data", "d.npz", "-o", b"q\xfe.onnx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    onnx.checker.check_model(onnx.load(os.path.join(os.fsencode(tmp_path), b"q\xfe.onnx")))


def test_ort_export_into_a_folder_whose_name_is_not_utf8(tmp_path: Path, odd: bytes) -> None:
    """The ORT-format file and its operator config land under the real (non-UTF-8) names,
    and the .ort runs like the .onnx."""
    import onnxruntime as ort

    from onnxopt.runtime.ort_format import save_ort_format

    done = run("quantize", odd, "--data", "d.npz", "-o", "q.onnx", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    folder = os.path.join(os.fsencode(tmp_path), b"run\xff")
    os.mkdir(folder)
    target = Path(os.fsdecode(os.path.join(folder, b"trial_0001.ort")))
    made = save_ort_format(tmp_path / "q.onnx", target)
    names = sorted(os.listdir(folder))
    assert names == [b"trial_0001.ort", b"trial_0001.required_operators_and_types.config"]
    assert made.model == target and made.model.stat().st_size > 0
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    sessions = [ort.InferenceSession(p.read_bytes(), providers=["CPUExecutionProvider"])
                for p in (tmp_path / "q.onnx", made.model)]  # fmt: skip
    outputs = [s.run(None, {s.get_inputs()[0].name: x})[0] for s in sessions]
    np.testing.assert_array_equal(outputs[0], outputs[1])
