"""The shipped artifacts side by side: .onnx vs .ort on onnxruntime vs OpenVINO, per model.

Usage: python benchmarks/deploy.py [--out benchmarks/results/deploy.json] [--rounds 7]

For digits-mlp, digits-cnn and digits-wide: train (seed 0), export, quantize at 8 bits and
with a mixed config (4-bit packed linear weights, 8-bit elsewhere; for the CNN the bundled
configs/quantize-cnn-mixed.toml), write the ORT-format file the search ships
(``save_ort_format``: fully optimized, with its reduced-build operator config), then time
every artifact interleaved (one intra-op thread; each round measures every file once, the
order rotating; median of per-round medians) at batch 1 and 256 on onnxruntime (.onnx and
.ort) and OpenVINO (the .onnx, when the openvino extra is installed). Records sizes on disk,
the kernels onnxruntime runs and this CPU's integer path; figures hold for that CPU only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench_common import interleaved_latency, machine_info

from onnxopt.atomic import write_text
from onnxopt.config import load_toml
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.digits import load_digits
from onnxopt.exporters.torch_onnx import export_module
from onnxopt.model_io import load_onnx, save_onnx
from onnxopt.models.training import train
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.runtime import get_backend
from onnxopt.runtime.cpu import integer_path
from onnxopt.runtime.kernels import kernel_facts
from onnxopt.runtime.ort_format import save_ort_format

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("digits-mlp", "digits-cnn", "digits-wide")
MIXED = {"by_type": {"linear": {"weight_width": 4}}, "storage": "packed"}


def configs(recipe: str) -> dict[str, QuantizationConfig]:
    mixed = (
        load_toml(ROOT / "configs/quantize-cnn-mixed.toml", QuantizationConfig)
        if recipe == "digits-cnn"
        else QuantizationConfig.model_validate(MIXED)
    )
    return {"int8": QuantizationConfig(), "mixed": mixed}


def openvino_available() -> bool:
    try:
        get_backend("openvino")
    except Exception:  # noqa: BLE001 - the extra is optional; the table says it is missing
        return False
    return True


def bench_recipe(recipe: str, dataset, folder: Path, rounds: int, openvino: bool) -> dict:
    trained = train(recipe, dataset, seed=0, progress=False)
    fp32 = export_module(trained.module, trained.input_shape, folder / f"{recipe}.onnx").path
    quantizer = Quantizer(load_onnx(fp32), dataset.calibration.x)
    onnx_files, ort_files = {"fp32": fp32}, {}
    for label, config in configs(recipe).items():
        onnx_files[label] = save_onnx(quantizer.quantize(config).model,
                                      folder / f"{recipe}-{label}.onnx")  # fmt: skip
    for label, path in onnx_files.items():
        ort_files[label] = save_ort_format(path, path.with_suffix(".ort")).model
    timed = {f"{label} .onnx": (path, "onnxruntime") for label, path in onnx_files.items()}
    timed |= {f"{label} .ort": (path, "onnxruntime") for label, path in ort_files.items()}
    if openvino:
        timed |= {f"{label} openvino": (path, "openvino") for label, path in onnx_files.items()}
    sample = dataset.test.x
    latency = interleaved_latency(
        {k: p for k, (p, _) in timed.items()}, sample, rounds,
        runtimes={k: r for k, (_, r) in timed.items()},
    )  # fmt: skip
    return {
        "files": {
            label: {
                "onnx_bytes": onnx_files[label].stat().st_size,
                "ort_bytes": ort_files[label].stat().st_size,
                "kernels": dict(kernel_facts(load_onnx(onnx_files[label])).counts),
            }
            for label in onnx_files
        },
        "latency_ms": {k: {b: v["median_ms"] for b, v in by.items()} for k, by in latency.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/deploy.json")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--recipes", default=",".join(RECIPES))
    args = parser.parse_args()
    openvino = openvino_available()
    path = integer_path()
    results = {
        "machine": machine_info(),
        "integer_path": path.as_dict(),
        "openvino": openvino,
        "models": {},
    }
    dataset = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes.split(","):
            folder = Path(tmp) / recipe
            folder.mkdir()
            results["models"][recipe] = bench_recipe(recipe, dataset, folder, args.rounds, openvino)
            for label, by_batch in results["models"][recipe]["latency_ms"].items():
                cells = "  ".join(f"b{b} {ms:.4f} ms" for b, ms in by_batch.items())
                print(f"{recipe:12s} {label:16s} {cells}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(results, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
