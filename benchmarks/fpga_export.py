"""hls4ml export of the JSC recipes and digits-mlp: convert and compile times, exactness,
precision tables, weight bits and resource proxies; print a table, write JSON.

Usage: python benchmarks/fpga_export.py [--out benchmarks/results/fpga_export.json]
    [--epochs 5] [--samples 5000]

Per model: train (seed 0), export, quantize with the library API at two configs (all 8-bit;
a mixed 2..8-bit config with a different width per layer), then ``export_hls4ml`` with
``verify``: hls4ml's converter and writer (``convert_s``), the g++ compile of its C++
emulation (``compile_s``, hls4ml's own ``build_lib.sh``), and the emulation's outputs
compared value by value with onnxruntime on the QDQ model.

The JSC jet data is not bundled and cannot be downloaded here: the JSC recipes train on a
synthetic file in the OpenML ``hls4ml_lhc_jets_hlf`` format (class-dependent feature means),
so their accuracies say nothing about jet tagging; exactness and sizes do not depend on it.
Verification runs on ``--samples`` inputs: the test split plus standard-normal draws x 4
(so the first quantizer saturates), every output compared.

No synthesis runs (no Vitis HLS / Vivado here): resource figures are graph counts
(``onnxopt.fpga.resources``), not LUT/DSP estimates.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from bench_common import machine_info

from onnxopt.config.fpga import Hls4mlOptions
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data import load_dataset
from onnxopt.data.jsc import OPENML_FEATURES
from onnxopt.exporters.torch_onnx import export_module
from onnxopt.fpga.export import export_hls4ml
from onnxopt.models.training import train
from onnxopt.optimizer.evaluate import evaluate_model
from onnxopt.optimizer.quantization.quantizer import Quantizer

RECIPES = ("jsc-tiny", "jsc-toy", "jsc-three-linear-layers", "jsc-s", "digits-mlp")
MIXED = [(6, 4, 8), (3, 2, 6), (5, 7, 5), (4, 3, 8), (8, 5, 7)]
"""(data_in, weight, bias) widths of the mixed config, layer by layer (cycled)."""


def synthetic_jsc(path: Path, n: int = 20000, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    labels = rng.choice(list("gqwzt"), size=n)
    centers = rng.normal(scale=2.0, size=(5, len(OPENML_FEATURES)))
    x = centers[np.array(["gqwzt".index(c) for c in labels])] + rng.normal(size=(n, 16))
    frame = pd.DataFrame(x, columns=list(OPENML_FEATURES))
    frame["jet_type"] = labels
    frame.to_parquet(path)
    return path


def configs(model: onnx.ModelProto) -> dict[str, dict]:
    names = [n.name for n in model.graph.node if n.op_type == "Gemm"]
    mixed = {
        name: {"data_in_width": a, "weight_width": w, "bias_width": b}
        for name, (a, w, b) in zip(names, MIXED * 4, strict=False)
    }
    eight = {"default": {"data_in_width": 8, "weight_width": 8, "bias_width": 8}}
    return {"8-bit": eight, "mixed": {"by_name": mixed}}


def check_inputs(dataset, samples: int) -> np.ndarray:
    x = dataset.test.x
    extra = max(0, samples - len(x))
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((extra, *x.shape[1:])) * 4).astype(np.float32)
    return np.concatenate([x, noise])[:samples]


def bench_model(recipe: str, dataset, folder: Path, epochs: int, samples: int) -> list[dict]:
    trained = train(recipe, dataset, epochs=epochs, seed=0, progress=False)
    base = export_module(trained.module, trained.input_shape, folder / f"{recipe}.onnx")
    model = onnx.load(base.path)
    quantizer = Quantizer(model, dataset.calibration.x)
    x = check_inputs(dataset, samples)
    rows = []
    for label, config in configs(model).items():
        qdq = quantizer.quantize(QuantizationConfig.model_validate(config)).model
        path = folder / f"{recipe}-{label}.onnx"
        onnx.save(qdq, path)
        accuracy = evaluate_model(
            path, dataset.test, measure_latency=False, num_classes=dataset.num_classes
        ).accuracy
        start = time.perf_counter()
        res = export_hls4ml(qdq, folder / f"{recipe}-{label}-hls", Hls4mlOptions(verify=True), x)
        total = time.perf_counter() - start
        report = json.loads(res.precision_path.read_text())
        rows.append(
            {
                "recipe": recipe,
                "config": label,
                "config_data": config,
                "test_accuracy_onnxruntime": accuracy,
                "convert_s": round(res.convert_seconds, 2),
                "compile_s": round(res.compile_seconds or 0.0, 2),
                "export_total_s": round(total, 2),
                "verify": res.verify.as_dict() if res.verify else None,
                "input_type": res.input_type,
                "weight_bits": res.weight_bits,
                "resources": {k: v for k, v in report["resources"].items() if k != "layers"},
                "float_layers": report["float_layers"],
                "precision": [
                    {"layer": r["hls4ml_layer"], "class": r["class"], **r["types"]}
                    for r in report["layers"]
                ],
            }
        )
        print(
            f"{recipe:<24} {label:<6} convert {res.convert_seconds:5.1f} s  compile "
            f"{res.compile_seconds:5.1f} s  {res.verify.exact}/{res.verify.total} exact  "
            f"{res.weight_bits:>7,} weight bits  input {res.input_type}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fpga_export.json"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=5000)
    args = parser.parse_args()
    info = machine_info()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jsc = load_dataset(str(synthetic_jsc(folder / "hls4ml_lhc_jets_hlf.parquet")))
        digits = load_dataset("digits")
        for recipe in RECIPES:
            data = digits if recipe.startswith("digits") else jsc
            rows += bench_model(recipe, data, folder, args.epochs, args.samples)
    result = {
        "machine": info,
        "hls4ml_options": Hls4mlOptions(verify=True).model_dump(),
        "jsc_data": "synthetic OpenML-format file (20,000 jets), not the real jet data",
        "samples_checked": args.samples,
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
