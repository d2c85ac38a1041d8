"""Which integer path onnxruntime's CPU kernels take on this machine, and whether it is exact.

onnxruntime's 8-bit Gemm/MatMul/Conv kernels (MLAS) multiply uint8 activations by int8
weights (u8s8). On x86 CPUs with AVX2 or AVX-512 but without VNNI they use ``VPMADDUBSW``,
which adds two u8 x s8 products into a *saturating* int16: with activation codes up to 255
and weights reaching -128 or 127 the pair sum overflows (2 * 255 * 128 = 65280 > 32767), so
an 8-bit model does not compute its fixed-point semantics there. Weights of 7 bits or fewer
(|code| <= 64) never overflow, and u8u8 kernels (uint8 weights with zero point 128) widen to
int16 before multiplying, exact on every CPU. VNNI (``VPDPBUSD``) accumulates in int32:
exact.

The CPU classes below are the deployment targets a quantization config can name
(``target_cpu``); :func:`integer_path` names this machine's class from its CPU flags and
confirms the u8s8 behaviour with a tiny probe model, which is the final word (an emulator or
a hypervisor may report flags the CPU does not execute).
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUTO = "auto"
"""``target_cpu = "auto"``: the class of the CPU onnxopt runs on."""


@dataclass(frozen=True)
class CpuClass:
    """A kind of CPU by the integer path onnxruntime's kernels take on it.

    Attributes:
        name: The config name (``target_cpu``).
        description: One line for reports.
        u8s8_exact: Whether uint8 x int8 products with full-range 8-bit weights are exact.
    """

    name: str
    description: str
    u8s8_exact: bool


CPU_CLASSES: Mapping[str, CpuClass] = {
    c.name: c
    for c in (
        CpuClass("avx512-vnni", "x86 with AVX-512 VNNI (VPDPBUSD, int32 sums)", True),
        CpuClass("avx-vnni", "x86 with AVX-VNNI (VPDPBUSD, int32 sums)", True),
        CpuClass("avx512", "x86 with AVX-512 but no VNNI (VPMADDUBSW, int16 pair sums)", False),
        CpuClass("avx2", "x86 with AVX2 but no VNNI (VPMADDUBSW, int16 pair sums)", False),
        CpuClass("x86", "x86 without AVX2", False),
        CpuClass("arm64", "64-bit ARM (NEON widening multiplies)", True),
        CpuClass("any", "any CPU: the representation that is exact everywhere", False),
    )
}
"""Every target a quantization config can name, besides ``"auto"``."""


@dataclass(frozen=True)
class IntegerPath:
    """The integer path of this machine.

    Attributes:
        cpu_class: The class whose behaviour this CPU showed (the probe's verdict wins over
            the flags).
        flags_class: The class the CPU flags name.
        u8s8_exact: What the probe measured.
        model_name: The CPU model string, when the OS tells it.
    """

    cpu_class: CpuClass
    flags_class: str
    u8s8_exact: bool
    model_name: str

    @property
    def name(self) -> str:
        return self.cpu_class.name

    def describe(self) -> str:
        """One line: class, what it means, and a flag/probe disagreement if any."""
        text = f"{self.name}: {self.cpu_class.description}"
        if self.u8s8_exact:
            text += "; u8s8 exact"
        else:
            text += "; u8s8 saturates, u8u8 used for 8-bit weights"
        if self.flags_class != self.name:
            text += f" (CPU flags say {self.flags_class}; the probe decided)"
        return text

    def as_dict(self) -> dict[str, str | bool]:
        """Plain JSON for manifests and reports."""
        return {
            "class": self.name,
            "flags_class": self.flags_class,
            "u8s8_exact": self.u8s8_exact,
            "cpu": self.model_name,
        }


def _linux_cpuinfo() -> tuple[set[str], str] | None:
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return None
    flags: set[str] = set()
    model = ""
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model") and not model:
            model = value.strip()
    return flags, model


def cpu_flags() -> tuple[set[str], str]:
    """The CPU feature flags and model name (``/proc/cpuinfo``, else py-cpuinfo)."""
    found = _linux_cpuinfo()
    if found is not None and found[0]:
        return found
    import cpuinfo  # py-cpuinfo: slower (about a second), used off Linux only

    info = cpuinfo.get_cpu_info()
    return set(info.get("flags", [])), str(info.get("brand_raw", ""))


def class_from_flags(flags: set[str], machine: str) -> str:
    """The CPU class the flags name (Linux spellings: ``avx512_vnni``, ``avx_vnni``)."""
    machine = machine.lower()
    if machine in ("arm64", "aarch64") or machine.startswith("armv8"):
        return "arm64"
    if not machine.startswith(("x86", "amd64", "i686", "i386")):
        return "any"
    if {"avx512_vnni", "avx512vnni"} & flags:
        return "avx512-vnni"
    if {"avx_vnni", "avxvnni"} & flags:
        return "avx-vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "x86"


_PROBE_K = 8


def _probe_model():
    """``y = DQ(a) @ DQ(w)`` with all-255 activations against weights -128 and 127: the
    int16 pair sums of a saturating u8s8 kernel overflow on every output."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.full((_PROBE_K, 2), -128, np.int8)
    w[:, 1] = 127
    inits = [
        numpy_helper.from_array(np.float32(1.0), "s"),
        numpy_helper.from_array(np.uint8(0), "za"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.int8(0), "zw"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["a", "s", "za"], ["af"]),
        helper.make_node("DequantizeLinear", ["w", "s", "zw"], ["wf"]),
        helper.make_node("MatMul", ["af", "wf"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "u8s8_probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, _PROBE_K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10), w


def probe_u8s8_exact() -> bool:
    """Whether onnxruntime's fused u8s8 kernel computes the probe exactly on this CPU."""
    from onnxopt.runtime.ort import make_session

    model, w = _probe_model()
    a = np.full((1, _PROBE_K), 255, np.uint8)
    got = make_session(model).run(None, {"a": a})[0]
    exact = a.astype(np.int64) @ w.astype(np.int64)
    return bool(np.array_equal(got.astype(np.int64), exact))


@functools.cache
def integer_path() -> IntegerPath:
    """This machine's integer path (computed once per process)."""
    flags, model = cpu_flags()
    named = class_from_flags(flags, platform.machine())
    exact = probe_u8s8_exact()
    cls = CPU_CLASSES[named]
    if cls.u8s8_exact != exact:
        # The flags promise what the kernels do not do, or the reverse (an emulator or a
        # hypervisor passing flags through): the kernels' behaviour decides.
        cls = CPU_CLASSES["avx2"] if not exact else CpuClass(
            named, f"{cls.description}, measured exact", True
        )
    return IntegerPath(cls, named, exact, model)


def resolve_target(target: str) -> CpuClass:
    """The CPU class a config's ``target_cpu`` names (``"auto"``: this machine's)."""
    if target == AUTO:
        return integer_path().cpu_class
    return CPU_CLASSES[target]


def target_names() -> tuple[str, ...]:
    """Valid ``target_cpu`` values."""
    return (AUTO, *CPU_CLASSES)
