"""onnxopt's bundled searches against onnxruntime's own ``quantize_static``, per digits model.

Usage: nice python benchmarks/vs_quantize_static.py [--models digits-mlp digits-cnn
    digits-wide] [--seeds 0 1 2] [--n-trials N] [--rounds 7]
    [--out benchmarks/results/vs_quantize_static.json]

For each model and seed (the seed trains the base model and seeds the sampler):

1. Runs the real command on the model's bundled config (``CONFIGS``, at most 200 trials),
   ``onnxopt search CONFIG --run-dir RUN``: training, search, export of the Pareto set and
   report.html (which already holds onnxruntime's per-tensor QDQ model).
2. Quantizes the run's fp32 ``base.onnx`` with onnxruntime's ``quantize_static`` in every
   variant of :data:`onnxopt.optimizer.quantization.ort_static.VARIANTS` (per-tensor QDQ,
   QOperator, per-channel QDQ), after ``quant_pre_process``, int8 weights, uint8
   activations, min-max on the same calibration split the search used.
3. Measures fp32, the variants and every exported Pareto model side by side on the test
   split: accuracy, bytes on disk, latency at batch 1 and 256 on one intra-op thread
   (interleaved rounds, median of per-round medians).

The pick is the exported model a user would ship on validation figures alone: the highest
validation accuracy, then the smallest, then the fastest. It *dominates* a variant when its
test accuracy is at least the variant's, its file at most as large and its batch-256
latency at most as long, one of them strictly. Win rates count seeds: how often the pick
dominates, and how often any exported Pareto model does. ``--update`` re-runs some models
and keeps the other models' runs of an earlier ``--out`` file (each run records its machine).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx
from bench_common import interleaved_latency, machine_info

from onnxopt.data.digits import load_digits
from onnxopt.optimizer.evaluate import evaluate_model
from onnxopt.optimizer.quantization.ort_static import VARIANTS, quantize_static_ort
from onnxopt.runtime.io import Feeds, graph_inputs

CONFIGS = {
    "digits-mlp": Path("configs/search-digits-mlp-quant-tpe.toml"),
    "digits-cnn": Path("configs/search-digits-cnn.toml"),
    "digits-wide": Path("configs/search-digits-wide-joint.toml"),
}
MAX_TRIALS = 200
LAT = "256"


def seeded_config(config: Path, seed: int, folder: Path) -> Path:
    """The bundled config with ``seed`` for the model and the sampler (nothing else)."""
    text = config.read_text()
    text, n = re.subn(r"^seed = \d+$", f"seed = {seed}", text, flags=re.M)
    assert n == 2, f"{config}: expected a [model] and a [search.strategy] seed"
    path = folder / config.name
    path.write_text(text)
    return path


def search(config: Path, run_dir: Path, n_trials: int | None) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "onnxopt", "search", str(config), "--run-dir", str(run_dir),
           "--no-progress"]  # fmt: skip
    if n_trials is not None:
        cmd += ["--n-trials", str(n_trials)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr}")
    seconds = time.perf_counter() - start
    return json.loads((run_dir / "report.json").read_text()), seconds


def measure(paths: dict[str, Path], rounds: int) -> dict[str, dict]:
    data = load_digits()
    sample = Feeds(graph_inputs(onnx.load(str(paths["fp32"]))), data.test.x[:256])
    latency = interleaved_latency(paths, sample, rounds)
    rows = {}
    for label, path in paths.items():
        acc = evaluate_model(path, data.test, num_classes=10, measure_latency=False).accuracy
        rows[label] = {"path": str(path), "size_bytes": path.stat().st_size,
                       "test_accuracy": float(acc),
                       "latency_ms": {b: v["median_ms"] for b, v in latency[label].items()},
                       "latency_rounds_ms": {b: v["round_medians_ms"]
                                             for b, v in latency[label].items()}}  # fmt: skip
    return rows


def dominates(a: dict, b: dict) -> bool:
    """Test accuracy >=, bytes <= and batch-256 latency <=, one strictly."""
    ge = (a["test_accuracy"] >= b["test_accuracy"], a["size_bytes"] <= b["size_bytes"],
          a["latency_ms"][LAT] <= b["latency_ms"][LAT])  # fmt: skip
    gt = (a["test_accuracy"] > b["test_accuracy"], a["size_bytes"] < b["size_bytes"],
          a["latency_ms"][LAT] < b["latency_ms"][LAT])  # fmt: skip
    return all(ge) and any(gt)


def pick(report: dict) -> str:
    """The exported model shipped on validation figures: most accurate, smallest, fastest."""
    def key(best):
        m = {**best["software_metrics"], **best["hardware_metrics"]}
        return (-m["accuracy"], m["size"], m.get("latency_b256", m.get("latency", 0.0)))

    return f"trial {min(report['best'], key=key)['number']}"


def one_run(model: str, seed: int, n_trials: int | None, rounds: int, tmp: Path) -> dict:
    folder = tmp / f"{model}-{seed}"
    folder.mkdir()
    config = seeded_config(CONFIGS[model], seed, folder)
    run_dir = folder / "run"
    report, seconds = search(config, run_dir, n_trials)
    base = run_dir / "base.onnx"
    calibration = load_digits().calibration.x
    paths = {"fp32": base}
    for name in VARIANTS:
        paths[f"quantize_static {name}"] = quantize_static_ort(
            onnx.load(str(base)), calibration, folder / f"ort_{name}.onnx", variant=name
        )
    for best in report["best"]:
        paths[f"trial {best['number']}"] = Path(best["export"]["onnx_path"])
    rows = measure(paths, rounds)
    chosen = pick(report)
    trials = [k for k in rows if k.startswith("trial ")]
    versus = {}
    for name in VARIANTS:
        ref = rows[f"quantize_static {name}"]
        p = rows[chosen]
        versus[name] = {
            "pick_dominates": dominates(p, ref),
            "any_dominates": [t for t in trials if dominates(rows[t], ref)],
            "size_ratio": p["size_bytes"] / ref["size_bytes"],
            "latency_ratio_b256": p["latency_ms"][LAT] / ref["latency_ms"][LAT],
            "latency_ratio_b1": p["latency_ms"]["1"] / ref["latency_ms"]["1"],
            "accuracy_diff_points": 100 * (p["test_accuracy"] - ref["test_accuracy"]),
        }
    params = {f"trial {b['number']}": b["params"] for b in report["best"]}
    return {"model": model, "seed": seed, "config": str(CONFIGS[model]),
            "n_trials": report["n_trials"], "search_seconds": seconds, "pick": chosen,
            "params": params, "models": rows, "versus": versus}  # fmt: skip


def summarize(runs: list[dict]) -> dict:
    out = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == model]
        out[model] = {}
        for name in VARIANTS:
            v = [r["versus"][name] for r in mine]
            out[model][name] = {
                "seeds": len(v),
                "pick_win_rate": sum(x["pick_dominates"] for x in v) / len(v),
                "any_win_rate": sum(bool(x["any_dominates"]) for x in v) / len(v),
                "size_ratio": [x["size_ratio"] for x in v],
                "latency_ratio_b256": [x["latency_ratio_b256"] for x in v],
                "accuracy_diff_points": [x["accuracy_diff_points"] for x in v],
            }
    return out


def print_run(r: dict) -> None:
    print(f"\n{r['model']} seed {r['seed']}: {r['n_trials']} trials in "
          f"{r['search_seconds']:.0f} s, pick {r['pick']}")  # fmt: skip
    print(f"  {'model':28s} {'bytes':>9s} {'test acc':>8s} {'b1 ms':>8s} {'b256 ms':>8s}")
    for label, m in r["models"].items():
        mark = " <- pick" if label == r["pick"] else ""
        print(f"  {label:28s} {m['size_bytes']:9,d} {100 * m['test_accuracy']:8.2f} "
              f"{m['latency_ms']['1']:8.4f} {m['latency_ms'][LAT]:8.4f}{mark}")  # fmt: skip
    for name, v in r["versus"].items():
        print(f"  vs quantize_static {name}: pick dominates {v['pick_dominates']}, "
              f"size {v['size_ratio']:.2f}x, b256 latency {v['latency_ratio_b256']:.2f}x, "
              f"accuracy {v['accuracy_diff_points']:+.2f} pt; dominating: "
              f"{v['any_dominates'] or 'none'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, help=f"override (at most {MAX_TRIALS})")
    parser.add_argument("--rounds", type=int, default=7)
    default_out = Path("benchmarks/results/vs_quantize_static.json")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--update", action="store_true",
                        help="replace only these models' runs in an existing --out file")
    args = parser.parse_args()
    if args.n_trials is not None and not 1 <= args.n_trials <= MAX_TRIALS:
        parser.error(f"--n-trials must be 1..{MAX_TRIALS}")
    machine = machine_info()
    runs = []
    with tempfile.TemporaryDirectory(prefix="vs-qs-") as tmp:
        for model in args.models:
            for seed in args.seeds:
                runs.append(one_run(model, seed, args.n_trials, args.rounds, Path(tmp)))
                runs[-1]["machine"] = machine
                print_run(runs[-1])
    if args.update and args.out.is_file():
        earlier = json.loads(args.out.read_text())
        kept = [{"machine": earlier["machine"], **r} for r in earlier["runs"]
                if r["model"] not in args.models]  # fmt: skip
        runs = kept + runs
    summary = summarize(runs)
    print("\nwin rates (seeds where the pick / any Pareto model dominates):")
    for model, by_variant in summary.items():
        for name, s in by_variant.items():
            print(f"  {model:12s} vs {name:16s} pick {s['pick_win_rate']:.2f}, "
                  f"any {s['any_win_rate']:.2f}")  # fmt: skip
    payload = {"benchmark": "vs_quantize_static", "machine": machine, "threads": 1,
               "rounds": args.rounds, "seeds": args.seeds, "n_trials_override": args.n_trials,
               "summary": summary, "runs": runs}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
