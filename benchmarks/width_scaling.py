"""Scale every hidden layer of digits-wide by 1, 0.5, 0.25 and 0.125; print a table, write JSON.

Usage: python benchmarks/width_scaling.py [--out benchmarks/results/width_scaling.json]
    [--rounds 5] [--no-quantize]

Train digits-wide (seed 0) and export it, then build every width with ONE
:class:`~onnxopt.optimizer.width.WidthScaler` over the training split
(:func:`~onnxopt.optimizer.width.refit_inputs`): each multiplier applies to every scalable
(non-frozen) channel group through ``scale_groups``, once with the default ridge refit of
the consumers and once with ``refit = "none"`` (plain truncation of the same channels, the
baseline the refit is measured against). Multiplier 1 is the scaler's unchanged copy of the
original. Unless ``--no-quantize``, the original and each ridge-refitted model are also
quantized to 8 bits (weights and activations, the default QuantizationConfig), a preview of
the search's joint width + quantization result.

Every model is measured in one run: test accuracy in onnxruntime, parameters, bytes on
disk, and latency at batch 1 and 256 with one intra-op thread. Latency is measured
interleaved: each round measures every model once (the order rotating from round to round),
and the reported figure is the median of the per-round medians, so drift in machine load
hits all models alike. Ratios are against the fp32 original (the issue asks accuracy, size
and latency as ratios to the original): accuracy ratio (scaled / original test accuracy)
and, alongside it, the difference in points; size ratio and how many times smaller on disk;
and the speed-up at each batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import onnx
from bench_common import BATCH_SIZES, interleaved_latency, machine_info

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.digits import load_digits
from onnxopt.data.shaping import adapt_inputs, onnx_input_shape
from onnxopt.exporters.torch_onnx import export_module
from onnxopt.model_io import load_onnx, save_onnx
from onnxopt.models.training import train
from onnxopt.optimizer.evaluate import evaluate_model
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.optimizer.width import WidthConfig, WidthScaler, refit_inputs

RECIPE = "digits-wide"
MULTIPLIERS = (1.0, 0.5, 0.25, 0.125)
REFITS = ("ridge", "none")
BASE = "w1"
"""Label of the fp32 original (multiplier 1), the reference of every ratio."""
TARGET = {"batch_size": 256, "min_speedup": 20.0, "min_smaller": 30.0, "max_acc_drop_pts": 1.0}
"""The product's joint width + quantization target, against the fp32 original."""


def label_of(m: float, refit: str, quantized: bool = False) -> str:
    name = f"w{m:g}" if m == 1.0 else f"w{m:g}-{'ridge' if refit == 'ridge' else 'trunc'}"
    return f"{name}-int8" if quantized else name


def build_models(dataset, folder: Path, quantize: bool) -> tuple[dict[str, Path], dict, dict]:
    """Train, export, scale with one WidthScaler, optionally quantize; save every model."""
    start = time.perf_counter()
    trained = train(RECIPE, dataset, seed=0, progress=False)
    train_s = time.perf_counter() - start
    exported = export_module(trained.module, trained.input_shape, folder / f"{RECIPE}.onnx").path
    base = load_onnx(exported)

    start = time.perf_counter()
    scaler = WidthScaler(base, refit_inputs(dataset))
    scaler_s = time.perf_counter() - start
    groups = [g.name for g in scaler.analysis.scalable_groups]
    info: dict = {
        "recipe": RECIPE,
        "train_seconds": round(train_s, 2),
        "exported_size_bytes": exported.stat().st_size,
        "refit_samples": int(len(refit_inputs(dataset))),
        "scaler_init_seconds": round(scaler_s, 4),
        "groups": {g.name: g.width for g in scaler.analysis.groups},
        "scaled_groups": groups,
        "frozen": {g.name: list(g.reasons) for g in scaler.analysis.frozen_groups},
    }
    paths: dict[str, Path] = {}
    models: dict[str, dict] = {}
    first_shrink = True
    for m in MULTIPLIERS:
        for refit in REFITS if m != 1.0 else ("ridge",):
            label = label_of(m, refit)
            entry: dict = {"multiplier": m, "refit": refit if m != 1.0 else None, "bits": 32}
            models[label] = entry
            try:
                result = scaler.scale_groups(
                    {name: m for name in groups}, WidthConfig.model_validate({"refit": refit})
                )
            except Exception as exc:  # a benchmark reports the library's refusal
                entry["error"] = f"{type(exc).__name__}: {exc}"
                print(f"{label}: scaling failed: {entry['error']}")
                continue
            entry["scale"] = result.as_dict()
            entry["scale_seconds"] = result.seconds
            # the first shrinking call also runs the base model once for the cached
            # calibration activations (importance and refit targets)
            entry["scale_includes_base_activations"] = m != 1.0 and first_shrink
            first_shrink = first_shrink and m == 1.0
            paths[label] = save_onnx(result.model, folder / f"{label}.onnx")
            if quantize and refit == "ridge":
                qlabel = label_of(m, refit, quantized=True)
                models[qlabel], path = quantize_one(
                    result.model, m, dataset, folder / f"{qlabel}.onnx"
                )
                if path is not None:
                    paths[qlabel] = path
    return paths, models, info


def quantize_one(model: onnx.ModelProto, m: float, dataset, path: Path) -> tuple[dict, Path | None]:
    """8-bit weights and activations (the default QuantizationConfig) of one fp32 model,
    saved at ``path``; the path returned is None when the library refuses."""
    entry: dict = {"multiplier": m, "refit": "ridge" if m != 1.0 else None, "bits": 8}
    start = time.perf_counter()
    try:
        candidate = Quantizer(model, dataset.calibration.x).quantize(QuantizationConfig())
    except Exception as exc:  # a benchmark reports the library's refusal
        entry["error"] = f"{type(exc).__name__}: {exc}"
        print(f"{path.stem}: quantization failed: {entry['error']}")
        return entry, None
    entry["quantize_seconds"] = time.perf_counter() - start
    entry["float_nodes"] = candidate.float_nodes
    return entry, save_onnx(candidate.model, path)


def static_metrics(paths: dict[str, Path], dataset, models: dict) -> None:
    """Test accuracy, parameters, bit width and bytes on disk, into ``models``."""
    for label, path in paths.items():
        report = evaluate_model(
            path, dataset.test, measure_latency=False, num_classes=dataset.num_classes
        )
        models[label].update(
            accuracy=float(report.accuracy),
            parameters=int(report.parameters),
            average_bitwidth=float(report.average_bitwidth),
            size_bytes=int(report.size_bytes),
        )


def accuracy_ratio(accuracy: float, base_accuracy: float) -> float | None:
    """Scaled over original test accuracy (None when the original scores 0: no ratio)."""
    return accuracy / base_accuracy if base_accuracy > 0 else None


def ratios(models: dict) -> dict:
    """Against the fp32 original: accuracy ratio and points, size ratios and speed-ups."""
    base = models[BASE]
    out = {}
    for label, m in models.items():
        if "latency_ms" not in m:
            continue
        row = {
            "accuracy_ratio": accuracy_ratio(m["accuracy"], base["accuracy"]),
            "accuracy_diff_pts": 100.0 * (m["accuracy"] - base["accuracy"]),
            "size_ratio": m["size_bytes"] / base["size_bytes"],
            "times_smaller": base["size_bytes"] / m["size_bytes"],
            "parameter_ratio": m["parameters"] / base["parameters"],
        }
        for b in BATCH_SIZES:
            base_ms = base["latency_ms"][str(b)]["median_ms"]
            row[f"speedup_b{b}"] = base_ms / m["latency_ms"][str(b)]["median_ms"]
        out[label] = row
    return out


def print_table(models: dict, ratio: dict) -> None:
    print(
        f"{'model':<18} {'test acc':>8} {'acc x':>6} {'d pts':>6} {'params':>9} {'size B':>9} "
        f"{'x smaller':>9} {'b1 ms':>8} {'b256 ms':>8} {'x b1':>6} {'x b256':>7} {'scale s':>8}"
    )
    for label, m in models.items():
        if label not in ratio:
            print(f"{label:<18} {m.get('error', 'not measured')}")
            continue
        r, lat = ratio[label], m["latency_ms"]
        scale = f"{m['scale_seconds']:.3f}" if "scale_seconds" in m else "-"
        if m.get("scale_includes_base_activations"):
            scale += "*"
        acc_x = "-" if r["accuracy_ratio"] is None else f"{r['accuracy_ratio']:.4f}"
        print(
            f"{label:<18} {m['accuracy']:>8.4f} {acc_x:>6} {r['accuracy_diff_pts']:>+6.2f} "
            f"{m['parameters']:>9,} {m['size_bytes']:>9,} {r['times_smaller']:>9.2f} "
            f"{lat['1']['median_ms']:>8.4f} {lat['256']['median_ms']:>8.4f} "
            f"{r['speedup_b1']:>6.2f} {r['speedup_b256']:>7.2f} {scale:>8}"
        )
    print(
        f"acc x: test accuracy / {BASE}'s; d pts: test accuracy minus {BASE}'s, in points; "
        f"x smaller: {BASE} bytes / model bytes; "
        f"x b1, x b256: {BASE} latency / model latency\n"
        "scale s: ScaleResult.seconds of the scale_groups call (* also ran the base model "
        "for the scaler's cached calibration activations); trunc = refit 'none'"
    )


def print_refits(models: dict) -> None:
    print("\nridge refits (relative error on the training split):")
    for label, m in models.items():
        refits = m.get("scale", {}).get("refits")
        if refits:
            errs = ", ".join(f"{r['node']} {r['relative_error']:.3g}" for r in refits)
            print(f"  {label:<14} {errs}")


def check_target(models: dict, ratio: dict) -> dict:
    """Which 8-bit models meet the joint target against the fp32 original."""
    t = TARGET
    checked = {}
    for label, r in ratio.items():
        if models[label]["bits"] != 8:
            continue
        passed = (
            r[f"speedup_b{t['batch_size']}"] >= t["min_speedup"]
            and r["times_smaller"] >= t["min_smaller"]
            and r["accuracy_diff_pts"] >= -t["max_acc_drop_pts"]
        )
        checked[label] = passed
    shown = ", ".join(f"{k} {'PASS' if v else 'MISS'}" for k, v in checked.items()) or "n/a"
    print(
        f"\ntarget vs fp32 {BASE}: >= {t['min_speedup']:g}x faster at batch {t['batch_size']}, "
        f">= {t['min_smaller']:g}x smaller, accuracy within {t['max_acc_drop_pts']:g} point: "
        f"{shown}"
    )
    return {**t, "models": checked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/width_scaling.json"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds")
    parser.add_argument(
        "--no-quantize", action="store_true", help="skip the 8-bit versions of the models"
    )
    args = parser.parse_args()
    meta = machine_info()
    start = time.perf_counter()
    dataset = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        paths, models, info = build_models(dataset, Path(tmp), not args.no_quantize)
        static_metrics(paths, dataset, models)
        sample = adapt_inputs(dataset.test.x, onnx_input_shape(load_onnx(paths[BASE])))
        latency = interleaved_latency(paths, sample, args.rounds)
    for label, lat in latency.items():
        models[label]["latency_ms"] = lat
    ratio = ratios(models)
    print(
        f"\n{meta['cpu_model']}, onnxruntime {meta['onnxruntime']}, 1 intra-op thread, "
        f"latency = median of {args.rounds} interleaved per-round medians\n"
        f"{RECIPE}: groups {info['groups']}; scaled {info['scaled_groups']}; refit on "
        f"{info['refit_samples']} training samples"
    )
    print_table(models, ratio)
    print_refits(models)
    target = check_target(models, ratio)
    meta.update(
        load_average_end=list(os.getloadavg()),
        rounds=args.rounds,
        seconds=round(time.perf_counter() - start, 1),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"meta": meta, **info, "target": target, "models": models, "ratios": ratio}, indent=2
        )
    )
    print(f"wrote {args.out} ({meta['seconds']} s)")


if __name__ == "__main__":
    main()
