"""Train, export and evaluate the digits reference recipes; print a table and write JSON.

Usage: python benchmarks/reference_models.py [--out benchmarks/results/reference_models.json]

Accuracy is measured in onnxruntime on the exported ONNX model (test split); latency at
batch 1 and 256 with one intra-op thread; size is bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from onnxopt.data.digits import load_digits
from onnxopt.exporters.torch_onnx import export_module
from onnxopt.models.training import train
from onnxopt.optimizer.evaluate import evaluate_model

RECIPES = ("digits-mlp", "digits-cnn", "digits-wide")


def measure(name: str, folder: Path, dataset) -> dict:
    start = time.perf_counter()
    trained = train(name, dataset, seed=0, progress=False)
    train_s = time.perf_counter() - start
    path = export_module(trained.module, trained.input_shape, folder / f"{name}.onnx").path
    report = evaluate_model(path, dataset.test, num_classes=dataset.num_classes).to_dict()
    return {"recipe": name, "train_seconds": round(train_s, 2), **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/reference_models.json")
    )
    args = parser.parse_args()
    dataset = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, Path(tmp), dataset) for name in RECIPES]
    print(
        f"{'recipe':<12} {'test acc':>8} {'train s':>8} {'b1 ms':>9} {'b256 ms':>9} "
        f"{'size B':>10} {'params':>10}"
    )
    for r in rows:
        lat = r["latency_ms"]
        print(
            f"{r['recipe']:<12} {r['accuracy']:>8.4f} {r['train_seconds']:>8.1f} "
            f"{lat['1']['median_ms']:>9.4f} {lat['256']['median_ms']:>9.4f} "
            f"{r['size_bytes']:>10,} {r['parameters']:>10,}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "python": platform.python_version()}
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
