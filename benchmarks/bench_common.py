"""Shared by the benchmark scripts: interleaved latency and the machine/checkout record."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from onnxopt.optimizer.evaluate import measure_latency
from onnxopt.runtime import DEFAULT_RUNTIME, get_backend
from onnxopt.runtime.io import Feeds

BATCH_SIZES = (1, 256)


def interleaved_latency(
    paths: dict[str, Path],
    sample: Feeds | np.ndarray,
    rounds: int,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    runtimes: dict[str, str] | None = None,
) -> dict:
    """Median over rounds of each model's per-round median latency (ms) per batch size
    (``sample``: rows of a one-input model, or Feeds for every input; ``runtimes``: the
    runtime per label, onnxruntime by default)."""
    runtimes = runtimes or {}
    sessions = {
        label: get_backend(runtimes.get(label, DEFAULT_RUNTIME)).load(path, threads=1)
        for label, path in paths.items()
    }
    labels = list(sessions)
    per_round: dict[str, dict[int, list[float]]] = {
        label: {b: [] for b in batch_sizes} for label in labels
    }
    for r in range(rounds):
        order = labels[r % len(labels) :] + labels[: r % len(labels)]
        for label in order:
            result = measure_latency(sessions[label], sample, batch_sizes=batch_sizes)
            for b in batch_sizes:
                per_round[label][b].append(result.for_batch(b).median_ms)
    return {
        label: {
            str(b): {"median_ms": statistics.median(ms), "round_medians_ms": ms}
            for b, ms in by_batch.items()
        }
        for label, by_batch in per_round.items()
    }


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
        "load_average_start": list(os.getloadavg()),
        "git": git_state(),
    }


def git_state() -> str:
    """Commit and dirty flag of the checkout: the library is what the figures measure."""
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({type(exc).__name__})"
    return done.stdout.strip() or "unknown"


def write_result(out: Path, payload: dict) -> None:
    """Write a benchmark's JSON atomically (a temporary file beside it, then a rename) and
    say where it went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)
    print(f"-> {out}")
