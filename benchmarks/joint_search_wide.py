"""The 100-trial joint width + quantization search on digits-wide, and what it finds.

Usage: python benchmarks/joint_search_wide.py [--rounds 7]
    [--out benchmarks/results/joint_search_wide.json]

1. Runs the real command on the example config,
   ``onnxopt search configs/search-digits-wide-joint.toml`` (NSGA-II, 100 trials, objectives
   validation accuracy / size / batch-256 latency, constraint: accuracy drop <= 0.5 point on
   validation), which trains digits-wide (seed 0), searches, and exports the Pareto set.
2. Picks one model the way a user would, on validation figures only:
   ``onnxopt select RUN --rule "min latency where accuracy_drop <= 0.005"``.
3. Measures the fp32 original and every exported Pareto model side by side: latency at
   batch 1 and 256 on one intra-op thread (interleaved rounds, median of per-round medians),
   bytes on disk, and accuracy on the held-out test split.

Targets (issue #6): the selected model at least 20x faster at batch 256, at least 30x
smaller on disk, and test accuracy within 1 point of the original.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import interleaved_latency, machine_info

from onnxopt.data.digits import load_digits
from onnxopt.optimizer.evaluate import evaluate_model

CONFIG = Path("configs/search-digits-wide-joint.toml")
RULE = "min latency where accuracy_drop <= 0.005"
TARGETS = {"speedup_b256": 20.0, "size_ratio": 30.0, "max_test_drop_points": 1.0}


def run(cmd: list[str]) -> str:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out.stdout


def measure(paths: dict[str, Path], rounds: int) -> dict:
    data = load_digits()
    sample = data.test.x[:256]
    latency = interleaved_latency(paths, sample, rounds)
    rows = {}
    for label, path in paths.items():
        acc = evaluate_model(path, data.test, num_classes=10, measure_latency=False).accuracy
        rows[label] = {"path": str(path), "size_bytes": path.stat().st_size,
                       "test_accuracy": acc, "latency_ms": latency[label]}  # fmt: skip
    base = rows["fp32"]
    for row in rows.values():
        row["size_ratio"] = base["size_bytes"] / row["size_bytes"]
        row["test_drop_points"] = 100 * (base["test_accuracy"] - row["test_accuracy"])
        for b in ("1", "256"):
            row[f"speedup_b{b}"] = (
                base["latency_ms"][b]["median_ms"] / row["latency_ms"][b]["median_ms"]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    default_out = Path("benchmarks/results/joint_search_wide.json")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        start = time.time()
        run([sys.executable, "-m", "onnxopt", "search", str(CONFIG), "--run-dir", str(run_dir),
             "--no-progress"])  # fmt: skip
        search_s = time.time() - start
        report = json.loads((run_dir / "report.json").read_text())
        selected = run([sys.executable, "-m", "onnxopt", "select", str(run_dir), "--rule", RULE,
                        "-o", str(run_dir / "selected")])  # fmt: skip
        chosen = int(selected.split()[1])
        paths = {"fp32": run_dir / "base.onnx"}
        for best in report["best"]:
            paths[f"trial {best['number']}"] = Path(best["export"]["onnx_path"])
        rows = measure(paths, args.rounds)
    print_table(rows, chosen)
    pick = rows[f"trial {chosen}"]
    met = {
        "speedup_b256": pick["speedup_b256"] >= TARGETS["speedup_b256"],
        "size_ratio": pick["size_ratio"] >= TARGETS["size_ratio"],
        "test_drop": pick["test_drop_points"] <= TARGETS["max_test_drop_points"],
    }
    print(f"selected trial {chosen} ({RULE}): targets met {met}; search took {search_s:.1f} s")
    params = {f"trial {b['number']}": b["params"] for b in report["best"]}
    payload = {"benchmark": "joint_search_wide", "machine": machine_info(), "config": str(CONFIG),
               "rule": RULE, "selected_trial": chosen, "search_seconds": search_s,
               "targets": TARGETS, "targets_met": met, "params": params,
               "models": _plain(rows)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"-> {args.out}")


def print_table(rows: dict, chosen: int) -> None:
    print(f"{'model':12s} {'bytes':>10s} {'x smaller':>9s} {'test acc':>8s} {'drop pt':>7s} "
          f"{'b1 ms':>8s} {'x b1':>6s} {'b256 ms':>8s} {'x b256':>7s}")  # fmt: skip
    for label, r in rows.items():
        mark = " *" if label == f"trial {chosen}" else ""
        b1, b256 = r["latency_ms"]["1"]["median_ms"], r["latency_ms"]["256"]["median_ms"]
        print(
            f"{label:12s} {r['size_bytes']:10,d} {r['size_ratio']:9.1f} "
            f"{100 * r['test_accuracy']:8.2f} {r['test_drop_points']:7.2f} "
            f"{b1:8.4f} {r['speedup_b1']:6.1f} {b256:8.4f} {r['speedup_b256']:7.1f}{mark}"
        )


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


if __name__ == "__main__":
    main()
