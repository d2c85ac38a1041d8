"""The bundled sentence encoder at fp32 and quantized four ways; print a table, write JSON.

Usage: python benchmarks/encoder_quantization.py [--rounds 5] [--dim 64] [--layers 2]
    [--out benchmarks/results/encoder_quantization.json]

Trains the ``sentence-encoder`` recipe (seed 0; ``--dim``/``--layers`` build a larger one
with the same code), exports it (int64 ids + mask), then quantizes it with:

* ``onnxopt static 8-bit``: static activations (calibrated), per-channel 8-bit weights
  ("mse" fractions), 8-bit embedding table (one scale per token);
* ``onnxopt dynamic 8-bit``: the same weights with dynamic activations
  (DynamicQuantizeLinear -> MatMulInteger);
* ``onnxopt 4-bit embeddings``: dynamic 8-bit with the table packed as INT4;
* ``onnxruntime quantize_dynamic``: onnxruntime's one call with its defaults.

Each quantization runs in its own child process: the seconds it takes once the libraries
and data are loaded, and the peak resident memory it adds above that (the kernel's peak
counter reset first), next to the same figures for a child that only reads the model; and
again in a child that first quantizes a tiny untrained encoder (dim 16, one layer) the same
way, so that the modules a first quantization imports and the runtime's one-time set-up
are not counted ("after a warm-up": the memory that grows with the model).
onnxopt's first candidate includes the one-time probe of this CPU's integer kernels
(``target_cpu = "auto"``, a contained onnxruntime session); "again" is a second candidate
from the same Quantizer (what each search trial pays);
the child's whole wall time and peak RSS are in the JSON.

On the test split (batches of 256, as ``onnxopt search`` measures): cosine
similarity to the fp32 embedding (mean and min), bytes on disk, and latency at batch 1 and
32 with one intra-op thread, measured interleaved (every round measures every model once,
the order rotating; the figure is the median of the per-round medians).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from bench_common import interleaved_latency, machine_info

BATCH_SIZES = (1, 32)
OUTPUT_BATCH = 256
LINEAR = {"weight_granularity": "per_channel", "weight_frac_width": "mse"}
TABLE = {"weight_granularity": "per_channel", "weight_frac_width": "mse", "weight_width": 8}
VARIANTS = {
    "onnxopt static 8-bit": {"by_type": {"linear": LINEAR, "gather": TABLE}},
    "onnxopt dynamic 8-bit": {
        "by_type": {"linear": {**LINEAR, "activation": "dynamic"}, "gather": TABLE}
    },
    "onnxopt 4-bit embeddings": {
        "storage": "packed",
        "by_type": {
            "linear": {**LINEAR, "activation": "dynamic"},
            "gather": {**TABLE, "weight_width": 4},
        },
    },  # fmt: skip
    "onnxruntime quantize_dynamic": None,
}
"""Variant -> QuantizationConfig data (None: onnxruntime's quantize_dynamic)."""


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _quantize(variant: str, base: str, out: str, calibration):
    """Quantize ``base`` to ``out`` as ``variant`` says (the Quantizer, or None)."""
    import onnxruntime.quantization

    from onnxopt.config.quantization import QuantizationConfig
    from onnxopt.model_io import load_onnx, save_onnx
    from onnxopt.optimizer.quantization.quantizer import Quantizer

    config = VARIANTS.get(variant)
    if variant == "load only":
        load_onnx(Path(base))
        return None
    if config is None:
        onnxruntime.quantization.quantize_dynamic(base, out)
        return None
    quantizer = Quantizer(load_onnx(Path(base)), calibration)
    save_onnx(quantizer.quantize(QuantizationConfig.model_validate(config)).model, Path(out))
    return quantizer


def quantize_child(variant: str, base: str, out: str, warm: str | None = None) -> None:
    """Run in a child process: quantize ``base`` to ``out`` as ``variant`` says, and print
    the seconds and the peak RSS above the resident set once libraries and data are loaded
    (the kernel's peak counter is reset first: ``/proc/self/clear_refs``). With ``warm``, a
    tiny model is quantized the same way first, so the modules the first quantization
    imports and the runtime's one-time set-up are not counted: what is left grows with the
    model."""
    from onnxopt.config.quantization import QuantizationConfig
    from onnxopt.data.token_corpus import load_token_corpus

    calibration = load_token_corpus().calibration.arrays()
    if warm is not None:
        _quantize(variant, warm, out, calibration)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    resident, start = _status_kib("VmRSS"), time.perf_counter()
    quantizer = _quantize(variant, base, out, calibration)
    config = VARIANTS.get(variant)
    seconds = time.perf_counter() - start
    added = max(_status_kib("VmHWM") - resident, 0) / 1024
    again = None
    if quantizer is not None:  # a second candidate of the same quantizer: what a trial pays
        again = time.perf_counter()
        quantizer.quantize(QuantizationConfig.model_validate(config))
        again = time.perf_counter() - again
    print(json.dumps({"in_process_s": seconds, "peak_added_mib": added, "again_s": again}))


def _timed_child(variant: str, base: Path, out: Path, warm: Path | None = None) -> dict:
    """Wall seconds and peak RSS (MiB) of one child process quantizing ``base`` (after the
    tiny ``warm`` model, when given)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, __file__, "--child", variant, str(base), str(out),
         *([str(warm)] if warm is not None else [])],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdout is not None
    printed = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"quantizing {variant!r} failed (exit {child.returncode})")
    inside = json.loads(printed.strip().splitlines()[-1])
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, **inside}


def _outputs(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options)
    n = len(next(iter(feeds.values())))
    parts = [session.run(None, {k: v[i : i + OUTPUT_BATCH] for k, v in feeds.items()})[0]
             for i in range(0, n, OUTPUT_BATCH)]  # fmt: skip
    return np.concatenate(parts).astype(np.float64)


def _base_model(folder: Path, dim: int, layers: int) -> tuple[Path, dict]:
    import torch

    from onnxopt.data.token_corpus import load_token_corpus
    from onnxopt.exporters.torch_named import export_named
    from onnxopt.models import recipes
    from onnxopt.models.encoder import SentenceEncoder
    from onnxopt.models.training import train

    if (dim, layers) != (64, 2):  # a larger encoder from the same code, for scale
        build = lambda _f, _c: SentenceEncoder(dim=dim, layers=layers, ff=2 * dim)  # noqa: E731
        recipe = recipes.RECIPES["sentence-encoder"]
        recipes.RECIPES["sentence-encoder"] = dataclasses.replace(recipe, build=build)
    start = time.perf_counter()
    trained = train("sentence-encoder", load_token_corpus(), seed=0, progress=False)
    path = folder / "fp32.onnx"
    export_named(trained.module, trained.sample, path, output_name="embedding")
    # the warm-up model of the memory figures: the same code, tiny and untrained
    tiny = SentenceEncoder(dim=16, layers=1, ff=32)
    export_named(tiny.eval(), trained.sample, folder / "tiny.onnx", output_name="embedding")
    params = sum(p.numel() for p in trained.module.parameters())
    torch.set_num_threads(1)
    return path, {"parameters": int(params), "dim": dim, "layers": layers,
                  "train_and_export_s": time.perf_counter() - start,
                  "topic_accuracy": trained.val_score}  # fmt: skip


def run(rounds: int, dim: int, layers: int) -> dict:
    from onnxopt.data.token_corpus import load_token_corpus
    from onnxopt.model_io import load_onnx
    from onnxopt.runtime.io import Feeds, graph_inputs

    with tempfile.TemporaryDirectory(prefix="onnxopt-encoder-bench-") as tmp:
        folder = Path(tmp)
        base, encoder = _base_model(folder, dim, layers)
        paths = {"fp32": base}
        tiny = folder / "tiny.onnx"
        quantize = {"load only": _timed_child("load only", base, folder / "none.onnx")}
        warm = {"load only": _timed_child("load only", base, folder / "none.onnx", tiny)}
        for i, variant in enumerate(VARIANTS):
            paths[variant] = folder / f"variant_{i}.onnx"
            quantize[variant] = _timed_child(variant, base, paths[variant])
            warm[variant] = _timed_child(variant, base, folder / f"warm_{i}.onnx", tiny)
        test = load_token_corpus().test.arrays()
        reference = _outputs(base, test)
        rows = {}
        for label, path in paths.items():
            out = _outputs(path, test)
            cos = (out * reference).sum(1) / (
                np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1)
            )
            rows[label] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                           "size_bytes": path.stat().st_size,
                           "quantize": quantize.get(label),
                           "quantize_warm": warm.get(label)}  # fmt: skip
        feeds = Feeds(graph_inputs(load_onnx(base)), test)
        latency = interleaved_latency(paths, feeds, rounds, batch_sizes=BATCH_SIZES)
        for label, by_batch in latency.items():
            rows[label]["latency_ms"] = {b: v["median_ms"] for b, v in by_batch.items()}
            rounds_ms = {b: v["round_medians_ms"] for b, v in by_batch.items()}
            rows[label]["latency_rounds_ms"] = rounds_ms
    return {"encoder": encoder, "rounds": rounds, "threads": 1, "load_only": quantize["load only"],
            "load_only_warm": warm["load only"],
            "variants": rows, "machine": machine_info()}  # fmt: skip


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(result: dict) -> str:
    lines = [
        (
            "| model | cosine mean | cosine min | size (bytes) | batch 1 (ms) | batch 32 (ms) "
            "| quantize (s) | again (s) | peak RSS added (MiB) | after a warm-up (MiB) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in result["variants"].items():
        q, w = r["quantize"] or {}, r.get("quantize_warm") or {}
        lines.append(
            f"| {label} | {r['cosine_mean']:.6f} | {r['cosine_min']:.6f} | {r['size_bytes']:,} "
            f"| {r['latency_ms']['1']:.3f} | {r['latency_ms']['32']:.3f} "
            f"| {q['in_process_s']:.2f} | {_seconds(q['again_s'])} | {q['peak_added_mib']:.1f} "
            f"| {w['peak_added_mib']:.1f} |"
            if q else
            f"| {label} | {r['cosine_mean']:.6f} | {r['cosine_min']:.6f} | {r['size_bytes']:,} "
            f"| {r['latency_ms']['1']:.3f} | {r['latency_ms']['32']:.3f} | - | - | - | - |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        quantize_child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "encoder_quantization.json"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    result = run(args.rounds, args.dim, args.layers)
    result["command"] = " ".join(["python", "benchmarks/encoder_quantization.py", *sys.argv[1:]])
    print(table(result))
    load = result["load_only"]
    print(
        f"quantize: seconds and peak RSS added inside the child, after the libraries and "
        f"data are loaded; a child that only loads them and reads the model: "
        f"{load['in_process_s']:.2f} s, +{load['peak_added_mib']:.1f} MiB (process peak "
        f"{load['peak_rss_mib']:.0f} MiB); CPU {result['machine']['cpu_model']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
