"""Third-party model kinds through every command: success, time, peak memory, 8-bit vs fp32.

Usage: python benchmarks/foreign_models.py [--out benchmarks/results/foreign_models.json]
    [--rounds 7] [--cnn-size 32] [--kinds unnamed,cnn_dynamic,...]

For each kind of ``tests/foreign/zoo.py`` (unnamed nodes, fixed batch 1 and 789,444, opset 7,
a CNN with symbolic H/W and Constant weights and Conv->BN, two float inputs, float + int64
mask, a state input fixed by the config, one sigmoid output, a split missing a class) this
runs the CLI as a user would, each command in its own process: ``evaluate``, ``quantize``
(default 8-bit config), ``scale`` (0.5x of the kind's scalable layer) and a 10-trial random
``search``. Per command: exit code, wall seconds and the process's peak RSS (``wait4``).
Then fp32 and the quantized file are timed interleaved (one intra-op thread, rounds
rotating the order, median of per-round medians) at batch 1 and 32, and their sizes on disk
compared. The CNN kind is built with 16 and 32 channels at ``--cnn-size`` (the 8x8 digits
upsampled) so its convolutions carry the work an edge CNN has.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from bench_common import interleaved_latency, machine_info

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxopt.atomic import write_text  # noqa: E402
from onnxopt.runtime.io import Feeds, graph_inputs  # noqa: E402
from tests.foreign import zoo  # noqa: E402 - the test models, one definition

BATCH_SIZES = (1, 32)
CNN_CHANNELS = (16, 32)
"""The CNN kind's channels here: an edge CNN's work (the tests use 8 and 8 for speed)."""
SEARCH = """
[search.strategy]
sampler = "random"
n_trials = 10
seed = 0
[search.evaluation]
batch_sizes = [1]
repeats = 3
min_time_s = 0
"""


PEAK = """
import atexit, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("VmHWM " + line.split()[1] + "\\n")
atexit.register(peak)
sys.argv = ["onnxopt", *sys.argv[1:]]
from onnxopt.cli import main
main()
"""
"""The command's process reports its own high-water RSS (``VmHWM`` counts from the exec;
``wait4``'s ``ru_maxrss`` would include this benchmark's memory copied at the fork)."""


def run(args: list[str]) -> dict:
    """One CLI command in its own process: exit code, seconds, peak RSS, last line."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *args], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    peak = [line for line in done.stderr.splitlines() if line.startswith("VmHWM ")]
    lines = (done.stdout + done.stderr).strip().splitlines()
    return {
        "exit_code": done.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(int(peak[-1].split()[1]) / 1024, 1) if peak else None,
        "last_line": next((x for x in reversed(lines) if not x.startswith("VmHWM ")), ""),
    }


def search_config(kind: zoo.Kind, model: Path, data: Path) -> str:
    types = ["linear"] + (["conv"] if any(n.op_type == "Conv" for n in kind.model.graph.node)
                          else [])  # fmt: skip
    widths = "".join(f"[search.quantization.by_type.{t}]\nweight_width = [4, 8]\n" for t in types)
    head = f'[model]\nonnx = "{model}"\n{kind.model_toml}[data]\ndataset = "{data}"\n'
    return head + widths + SEARCH


def bench_kind(kind: zoo.Kind, folder: Path, rounds: int) -> dict:
    model, data = kind.save(folder)
    common = ["--data", str(data), *kind.options]
    q8 = folder / "q8.onnx"
    commands = {
        "evaluate": ["evaluate", str(model), *common, "--batch-size", "1"],
        "quantize": ["quantize", str(model), *common, "-o", str(q8)],
    }
    if kind.scale_layer is not None:
        width = folder / "width.toml"
        width.write_text(f"[layers.{kind.scale_layer}]\nchannel_multiplier = 0.5\n")
        commands["scale"] = ["scale", str(model), "--config", str(width), *common, "-o",
                             str(folder / "scaled.onnx")]  # fmt: skip
    config = folder / "search.toml"
    config.write_text(search_config(kind, model, data))
    commands["search"] = ["search", str(config), "--run-dir", str(folder / "run"), "--no-progress"]
    result: dict = {"commands": {name: run(args) for name, args in commands.items()}}
    if q8.exists():
        fp32 = folder / "fp32.onnx"  # the original, batch freed like the quantized file
        onnx.save(kind.reference_model or kind.model, fp32)
        feeds = Feeds(graph_inputs(onnx.load(q8)), kind.data("test"), kind.fixed)
        latency = interleaved_latency({"fp32": fp32, "int8": q8}, feeds, rounds, BATCH_SIZES)
        result["latency_ms"] = {
            label: {b: v["median_ms"] for b, v in by_batch.items()}
            for label, by_batch in latency.items()
        }
        result["size_bytes"] = {"fp32": model.stat().st_size, "int8": q8.stat().st_size}
        result["int8_vs_fp32"] = {
            "smaller": round(model.stat().st_size / q8.stat().st_size, 2),
            **{f"faster_b{b}": round(latency["fp32"][str(b)]["median_ms"]
                                     / latency["int8"][str(b)]["median_ms"], 2)
               for b in BATCH_SIZES},
        }  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/foreign_models.json")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--cnn-size", type=int, default=16)
    parser.add_argument("--kinds", default=",".join(zoo.KINDS))
    args = parser.parse_args()
    results = {"machine": machine_info(), "batch_sizes": list(BATCH_SIZES), "kinds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.kinds.split(","):
            kind = (
                zoo.cnn_dynamic(args.cnn_size, CNN_CHANNELS)
                if name == "cnn_dynamic"
                else zoo.KINDS[name]()
            )
            results["kinds"][name] = bench_kind(kind, Path(tmp) / name, args.rounds)
            _print_row(name, results["kinds"][name])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


def _print_row(name: str, result: dict) -> None:
    cells = [
        f"{c}: {'ok' if r['exit_code'] == 0 else 'EXIT ' + str(r['exit_code'])} "
        f"{r['seconds']}s {r['peak_rss_mib']}MiB"
        for c, r in result["commands"].items()
    ]
    ratio = result.get("int8_vs_fp32", {})
    print(f"{name:15s} " + " | ".join(cells) + f" | int8 vs fp32 {ratio}", flush=True)


if __name__ == "__main__":
    main()
