"""Compare fp32, 8-bit and packed 4-bit digits models side by side; print a table, write JSON.

Usage: python benchmarks/quantization_speed.py [--out benchmarks/results/quantization_speed.json]
    [--rounds 5] [--profile-runs 200]

For digits-wide and digits-cnn: train (seed 0), export, quantize with the library API
(8-bit weights and activations; 4-bit packed weights with 8-bit activations), then measure
every variant in one run: test accuracy in onnxruntime, bytes on disk, and latency at
batch 1 and 256 with one intra-op thread. Latency is measured interleaved: each round
measures every model once (the order rotating from round to round), and the reported
figure is the median of the per-round medians, so drift in machine load hits all models
alike. An onnxruntime profile at batch 256 then shows which kernels run and how long each
takes, so a layer that is slower quantized stands out.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from bench_common import BATCH_SIZES, interleaved_latency, machine_info

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.digits import load_digits
from onnxopt.data.shaping import adapt_inputs, onnx_input_shape
from onnxopt.exporters.torch_onnx import export_module
from onnxopt.model_io import load_onnx, save_onnx
from onnxopt.models.training import train
from onnxopt.optimizer.evaluate import evaluate_model
from onnxopt.optimizer.evaluate.latency import make_batch
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.runtime.kernels import kernel_facts
from onnxopt.runtime.ort import session_options

RECIPES = ("digits-wide", "digits-cnn")
CONFIGS = {
    "int8": {},
    "w4_packed": {"default": {"weight_width": 4}, "storage": "packed"},
}
"""Quantized variants: name -> QuantizationConfig data (8-bit activations in both)."""
TARGET = {"recipe": "digits-wide", "model": "int8", "batch_size": 256, "min_speedup": 3.0}
COMPUTE_OPS = frozenset(
    {"Conv", "FusedConv", "QLinearConv", "ConvInteger", "Gemm", "FusedGemm", "QGemm",
     "MatMul", "FusedMatMul", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat"}
)  # fmt: skip
"""Kernels that compute a Gemm/Conv layer, for matching layers across profiles by position."""


def build_models(name: str, folder: Path, dataset) -> tuple[dict[str, Path], dict]:
    """Train and export the recipe, then quantize it once per entry of :data:`CONFIGS`."""
    start = time.perf_counter()
    trained = train(name, dataset, seed=0, progress=False)
    train_s = time.perf_counter() - start
    fp32 = export_module(trained.module, trained.input_shape, folder / f"{name}.onnx").path
    paths = {"fp32": fp32}
    info: dict = {"train_seconds": round(train_s, 2), "quantization": {}}
    quantizer = Quantizer(load_onnx(fp32), dataset.calibration.x)
    for label, data in CONFIGS.items():
        try:
            candidate = quantizer.quantize(QuantizationConfig.model_validate(data))
        except Exception as exc:  # a benchmark reports the library's refusal, it does not hide it
            message = f"{type(exc).__name__}: {exc}"
            print(f"{name} {label}: quantization failed: {message}")
            info["quantization"][label] = {"config": data, "error": message}
            continue
        paths[label] = save_onnx(candidate.model, folder / f"{name}-{label}.onnx")
        info["quantization"][label] = {"config": data, "float_nodes": candidate.float_nodes}
    return paths, info


def static_metrics(paths: dict[str, Path], dataset) -> dict[str, dict]:
    """Test accuracy, bytes on disk and the kernels onnxruntime runs, per model."""
    out = {}
    for label, path in paths.items():
        report = evaluate_model(
            path, dataset.test, measure_latency=False, num_classes=dataset.num_classes
        )
        out[label] = {
            "accuracy": float(report.accuracy),
            "size_bytes": int(report.size_bytes),
            "average_bitwidth": float(report.average_bitwidth),
            "kernels": dict(kernel_facts(load_onnx(path)).counts),
        }
    return out


def profile_nodes(path: Path, sample: np.ndarray, runs: int, folder: Path) -> list[dict]:
    """Per-node kernel time in execution order: us summed over ``runs`` batch-256 runs, and
    the median us of one run (robust to a preemption landing in a few runs)."""
    options = session_options(threads=1)
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / f"profile-{path.stem}")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: make_batch(sample, 256)}
    for _ in range(runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    durations: dict[str, list[int]] = collections.defaultdict(list)
    op_types: dict[str, str] = {}
    for event in events:
        if not isinstance(event, dict) or event.get("cat") != "Node":
            continue
        name = str(event.get("name", ""))
        if name.endswith(("_fence_before", "_fence_after")):
            continue
        name = name.removesuffix("_kernel_time")
        durations[name].append(int(event.get("dur", 0)))
        op_types.setdefault(name, str(event.get("args", {}).get("op_name", "?")))
    if not durations:
        raise RuntimeError(f"the trace {trace.name} holds no Node events")
    return [
        {"node": n, "op_type": op_types[n], "total_us": sum(us), "median_us": statistics.median(us)}
        for n, us in durations.items()
    ]


def profile_all(paths: dict[str, Path], sample: np.ndarray, runs: int, folder: Path) -> dict:
    """Profiles of every model; a failure is recorded with its reason and the others go on."""
    out: dict[str, dict] = {}
    for label, path in paths.items():
        try:
            out[label] = {"runs": runs, "nodes": profile_nodes(path, sample, runs, folder)}
        except Exception as exc:  # profiling is a diagnostic; the figures above stand anyway
            out[label] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{path.stem}: profiling failed: {out[label]['error']}")
    return out


def layer_names(path: Path) -> list[str]:
    """Gemm/MatMul/Conv node names of the float model, in graph order."""
    return [n.name for n in load_onnx(path).graph.node if n.op_type in ("Gemm", "MatMul", "Conv")]


def match_layers(fp32_layers: list[str], profiles: dict) -> list[dict] | None:
    """Each float layer with the compute kernel at the same position in every profile.

    The digits recipes are chains, so the k-th Gemm/Conv kernel executed is the k-th layer;
    None when some profile runs a different number of compute kernels (no safe match).
    """
    kernels = {}
    for label, prof in profiles.items():
        if "nodes" not in prof:
            continue
        found = [n for n in prof["nodes"] if n["op_type"] in COMPUTE_OPS]
        if len(found) != len(fp32_layers):
            return None
        kernels[label] = found
    return [
        {"layer": layer, **{label: found[i] for label, found in kernels.items()}}
        for i, layer in enumerate(fp32_layers)
    ]


def by_op_type(nodes: list[dict]) -> dict[str, int]:
    """Total kernel time (us) per op type, largest first."""
    totals: dict[str, int] = collections.defaultdict(int)
    for n in nodes:
        totals[n["op_type"]] += n["total_us"]
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def ratios(models: dict, latency: dict) -> dict:
    """fp32/quantized speed-up per batch size and quantized/fp32 size, per quantized model."""
    base = models["fp32"]
    out = {}
    for label in models:
        if label == "fp32":
            continue
        row = {"size_ratio": models[label]["size_bytes"] / base["size_bytes"]}
        for b in BATCH_SIZES:
            fp32_ms = latency["fp32"][str(b)]["median_ms"]
            row[f"speedup_b{b}"] = fp32_ms / latency[label][str(b)]["median_ms"]
        out[label] = row
    return out


def run_recipe(name: str, dataset, folder: Path, rounds: int, profile_runs: int) -> dict:
    """Everything measured for one recipe, as plain JSON."""
    paths, info = build_models(name, folder, dataset)
    models = static_metrics(paths, dataset)
    sample = adapt_inputs(dataset.test.x, onnx_input_shape(load_onnx(paths["fp32"])))
    latency = interleaved_latency(paths, sample, rounds)
    profiles = profile_all(paths, sample, profile_runs, folder)
    for prof in profiles.values():
        if "nodes" in prof:
            prof["by_op_type_us"] = by_op_type(prof["nodes"])
    return {
        "recipe": name,
        **info,
        "models": {label: {**models[label], "latency_ms": latency[label]} for label in paths},
        "ratios": ratios(models, latency),
        "profile": profiles,
        "layers": match_layers(layer_names(paths["fp32"]), profiles),
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"{'recipe':<12} {'model':<10} {'test acc':>8} {'size B':>9} {'size/fp32':>9} "
        f"{'b1 ms':>8} {'b256 ms':>8} {'x b1':>6} {'x b256':>6}"
    )
    for r in rows:
        for label, m in r["models"].items():
            ratio = r["ratios"].get(
                label, {"size_ratio": 1.0, "speedup_b1": 1.0, "speedup_b256": 1.0}
            )
            lat = m["latency_ms"]
            print(
                f"{r['recipe']:<12} {label:<10} {m['accuracy']:>8.4f} {m['size_bytes']:>9,} "
                f"{ratio['size_ratio']:>9.3f} {lat['1']['median_ms']:>8.4f} "
                f"{lat['256']['median_ms']:>8.4f} {ratio['speedup_b1']:>6.2f} "
                f"{ratio['speedup_b256']:>6.2f}"
            )
    print("x b1, x b256: fp32 latency / model latency (speed-up); size/fp32: bytes on disk ratio")


def print_profile(r: dict) -> None:
    print(f"\n{r['recipe']}: onnxruntime profile, batch 256, kernel us per run (mean, median)")
    for label, prof in r["profile"].items():
        if "error" in prof:
            print(f"  {label:<10} profiling failed: {prof['error']}")
            continue
        runs = prof["runs"]
        types = ", ".join(f"{op} {us / runs:.1f}" for op, us in prof["by_op_type_us"].items())
        total = sum(prof["by_op_type_us"].values()) / runs
        print(f"  {label:<10} mean total {total:8.1f}  by op type: {types}")
        for n in prof["nodes"]:
            print(
                f"      {n['node']:<34} {n['op_type']:<18} "
                f"{n['total_us'] / runs:9.1f} {n['median_us']:9.1f}"
            )
    print_layers(r)


def print_layers(r: dict) -> None:
    if not r["layers"]:
        print("  per-layer match skipped: the profiles run different numbers of Gemm/Conv kernels")
        return
    labels = [k for k in r["profile"] if "nodes" in r["profile"][k]]
    head = "".join(f" {k + ' kernel':>22} {'med us':>8}" for k in labels)
    print(f"  per layer (matched by position){head}")
    for row in r["layers"]:
        cells = "".join(f" {row[k]['op_type']:>22} {row[k]['median_us']:>8.1f}" for k in labels)
        slower = [k for k in labels if k != "fp32" and _slower(row, k)]
        flag = f"  SLOWER quantized: {', '.join(slower)}" if slower else ""
        print(f"  {row['layer']:<31}{cells}{flag}")


def _slower(row: dict, label: str) -> bool:
    """Slower by the per-run median, which one preempted run cannot move."""
    return "fp32" in row and row[label]["median_us"] > row["fp32"]["median_us"]


def check_target(rows: list[dict]) -> dict:
    t = TARGET
    row = next((r for r in rows if r["recipe"] == t["recipe"]), None)
    speedup = None
    if row is not None and t["model"] in row["ratios"]:
        speedup = row["ratios"][t["model"]][f"speedup_b{t['batch_size']}"]
    passed = speedup is not None and speedup >= t["min_speedup"]
    shown = "n/a" if speedup is None else f"{speedup:.2f}x"
    print(
        f"\ntarget: {t['recipe']} {t['model']} >= {t['min_speedup']:.1f}x faster than fp32 at "
        f"batch {t['batch_size']}: {shown} -> {'PASS' if passed else 'MISS'}"
    )
    return {**t, "speedup": speedup, "passed": passed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/quantization_speed.json")
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    parser.add_argument("--profile-runs", type=int, default=200, help="batch-256 profiled runs")
    args = parser.parse_args()
    meta = machine_info()
    start = time.perf_counter()
    dataset = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            run_recipe(name, dataset, Path(tmp), args.rounds, args.profile_runs) for name in RECIPES
        ]
    print(
        f"\n{meta['cpu_model']}, onnxruntime {meta['onnxruntime']}, 1 intra-op thread, "
        f"latency = median of {args.rounds} interleaved per-round medians"
    )
    print_table(rows)
    for r in rows:
        print_profile(r)
    target = check_target(rows)
    meta.update(
        load_average_end=list(os.getloadavg()),
        rounds=args.rounds,
        profile_runs=args.profile_runs,
        seconds=round(time.perf_counter() - start, 1),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "target": target, "results": rows}, indent=2))
    print(f"wrote {args.out} ({meta['seconds']} s)")


if __name__ == "__main__":
    main()
