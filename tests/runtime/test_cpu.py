"""The CPU integer path: flags, the probe, the target registry, and both CPU kinds for real.

The machine running the suite is one kind of CPU (AVX-512 VNNI or AVX2-only, say). The
other kind runs under QEMU's user-mode emulator with ``-cpu Haswell`` (AVX2, no AVX-512,
no VNNI): onnxruntime then takes its VPMADDUBSW u8s8 path, and the independent-reference
quantization tests, the probe and ``onnxopt verify`` run there too. `.ci/run` installs
QEMU (Debian's qemu-user) when it is missing; without it these tests skip locally and fail
under ``CI``.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config import validate
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.errors import ConfigError
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.runtime import cpu

REPO = Path(__file__).resolve().parents[2]
QEMU = shutil.which("qemu-x86_64")


@pytest.mark.parametrize(
    ("flags", "machine", "expected"),
    [
        ({"avx2", "avx512bw", "avx512_vnni"}, "x86_64", "avx512-vnni"),
        ({"avx2", "avx_vnni"}, "x86_64", "avx-vnni"),
        ({"avx2", "avx512bw", "avx512f"}, "x86_64", "avx512"),
        ({"avx2", "fma"}, "x86_64", "avx2"),
        ({"sse4_1"}, "x86_64", "x86"),
        ({"asimd", "asimddp"}, "aarch64", "arm64"),
        (set(), "riscv64", "any"),
    ],
)
def test_class_from_flags(flags, machine, expected):
    assert cpu.class_from_flags(flags, machine) == expected


def test_every_named_class_says_whether_u8s8_is_exact():
    saturating = {n for n, c in cpu.CPU_CLASSES.items() if not c.u8s8_exact}
    assert saturating == {"avx512", "avx2", "x86", "any"}
    assert set(cpu.target_names()) == {"auto", *cpu.CPU_CLASSES}
    for name in cpu.target_names():  # the config accepts exactly the registry's names
        assert validate(QuantizationConfig, {"target_cpu": name}).target_cpu == name
    with pytest.raises(ConfigError, match="unknown target CPU 'avx3'; did you mean 'avx2'"):
        validate(QuantizationConfig, {"target_cpu": "avx3"})


def _own_probe_saturates() -> bool:
    """This test's own probe (not onnxopt's): 255 x -128 in a fused u8s8 MatMul."""
    import onnxruntime as ort

    k = 4
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["a", "s", "za"], ["af"]),
         helper.make_node("DequantizeLinear", ["w", "s", "zw"], ["wf"]),
         helper.make_node("MatMul", ["af", "wf"], ["y"])],
        "p", [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(np.float32(1), "s"), numpy_helper.from_array(np.uint8(0), "za"),
         numpy_helper.from_array(np.full((k, 1), 127, np.int8), "w"),
         numpy_helper.from_array(np.int8(0), "zw")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"a": np.full((1, k), 255, np.uint8)})[0]
    return float(y[0, 0]) != 255.0 * 127 * k


def test_integer_path_agrees_with_an_independent_probe():
    path = cpu.integer_path()
    assert path.u8s8_exact == (not _own_probe_saturates())
    assert path.cpu_class.u8s8_exact == path.u8s8_exact
    assert path.as_dict()["class"] == path.name


def _mlp(tmp_path: Path) -> Path:
    """An MLP written with onnx.helper whose first weights all reach full range."""
    rng = np.random.default_rng(0)
    w1 = (127 / 256 * rng.choice([-1.0, 1.0], (16, 12))).astype(np.float32)  # codes +-127
    w2 = rng.normal(0, 0.5, (12, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], "mm1"),
         helper.make_node("Relu", ["h"], ["r"], "relu"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], "mm2")],
        "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )  # fmt: skip
    path = tmp_path / "mlp.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), path)
    return path


def _quantized(tmp_path: Path, target: str, x: np.ndarray) -> Path:
    config = validate(QuantizationConfig, {"target_cpu": target})
    model = Quantizer(onnx.load(_mlp(tmp_path)), x).quantize(config).model
    out = tmp_path / f"q-{target}.onnx"
    onnx.save(model, out)
    return out


def _data(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Pre-split data (numpy's sort, which a split uses, crashes under QEMU's AVX2)."""
    # inputs at both ends of the range: activation codes 0 and 255, where u8s8 pairs overflow
    x = np.random.default_rng(1).choice([-127 / 16, 127 / 16], (64, 16)).astype(np.float32)
    y = np.arange(64) % 4
    path = tmp_path / "d.npz"
    splits = ("train", "val", "test")
    np.savez(path, **{f"{k}_{s}": v for s in splits for k, v in (("x", x), ("y", y))})
    return path, x


def _run(args: list[str], *, emulate: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, *args]
    if emulate:
        cmd = [QEMU, "-cpu", "Haswell", *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    proc.stderr = "\n".join(ln for ln in proc.stderr.splitlines() if "TCG doesn't" not in ln)
    return proc


def test_verify_auto_target_is_exact_here(tmp_path):
    data, x = _data(tmp_path)
    model = _quantized(tmp_path, "auto", x)
    proc = _run(["-m", "onnxopt", "verify", str(model), "--data", str(data), "--split", "train"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "100.00%" in proc.stdout and "max |diff|          0" in proc.stdout


def test_verify_refuses_a_float_model(tmp_path):
    data, _ = _data(tmp_path)
    proc = _run(["-m", "onnxopt", "verify", str(_mlp(tmp_path)), "--data", str(data)])
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: mlp.onnx has no quantized tensors")


needs_emulator = pytest.mark.skipif(
    QEMU is None or platform.machine() != "x86_64",
    reason="qemu-x86_64 not installed (.ci/run installs Debian's qemu-user)",
)


@pytest.fixture
def emulator():
    if (QEMU is None or platform.machine() != "x86_64") and os.environ.get("CI"):
        pytest.fail("CI needs qemu-x86_64 to test the AVX2 integer path; .ci/run installs it")


@needs_emulator
@pytest.mark.slow
def test_an_avx2_cpu_is_detected_and_verify_tells_the_representations_apart(
    tmp_path, emulator
):
    """Under AVX2 emulation: the probe finds saturation; int8 weights are not exact there,
    uint8 weights (target "any") are, and verify says which. (verify prints the probe's
    finding: an interpreter of its own under QEMU would cost 18 s more.)"""
    data, x = _data(tmp_path)
    args = ["-m", "onnxopt", "verify", "--data", str(data), "--split", "train"]
    int8 = _run([*args, str(_quantized(tmp_path, "avx512-vnni", x))], emulate=True)
    assert int8.returncode == 1, int8.stdout + int8.stderr
    path = next(line for line in int8.stdout.splitlines() if "CPU integer path" in line)
    assert "avx2 (" in path and "u8s8 saturates" in path, path
    assert "this CPU's u8s8 kernels saturate" in int8.stdout
    portable = _run([*args, str(_quantized(tmp_path, "any", x))], emulate=True)
    assert portable.returncode == 0, portable.stdout + portable.stderr
    assert "100.00%" in portable.stdout


@needs_emulator
@pytest.mark.slow
def test_the_independent_reference_passes_on_an_avx2_cpu(emulator):
    """The whole independent-reference file, exactness asserted, on the other CPU kind."""
    target = REPO / "tests/optimizer/quantization/test_quant_independent_reference.py"
    proc = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(target)], emulate=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
