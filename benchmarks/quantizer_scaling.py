"""How the quantizer's time grows with the number of nodes: a chain of N Gemm+Relu layers.

Usage: python benchmarks/quantizer_scaling.py [--sizes 64 128 256 512 1024] [--repeats 3]
    [--out benchmarks/results/quantizer_scaling.json]

For each N, a float model of N Gemm -> Relu layers (width 16, opset 21, built with
onnx.helper: 2N nodes) is calibrated once and quantized with the default config (8-bit
weights and activations, "auto" fractions) by onnxopt's :class:`Quantizer`; the figure is the
median of ``--repeats`` candidates of one Quantizer (what a search trial pays: annotation,
the QDQ pass, the model written back), and the calibration's time once (after a warm-up
on a 4-layer chain, so imports and the crash-check child's start are not counted). The growth
exponent is the slope of log(time) against log(N) between the smallest and the largest N:
1 is linear, 2 quadratic.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from bench_common import machine_info, write_result
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.optimizer.quantization.quantizer import Quantizer

WIDTH = 16


def chain(layers: int) -> onnx.ModelProto:
    """``layers`` Gemm -> Relu blocks of width 16 on one input."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = rng.normal(0, 0.3, (WIDTH, WIDTH)).astype(np.float32)
        b = rng.normal(0, 0.1, WIDTH).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"g{i}"], name=f"gemm{i}", transB=1),
            helper.make_node("Relu", [f"g{i}"], [f"r{i}"], name=f"relu{i}"),
        ]
        x = f"r{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", WIDTH])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def measure(layers: int, repeats: int) -> dict:
    x = np.random.default_rng(1).normal(size=(64, WIDTH)).astype(np.float32)
    quantizer = Quantizer(chain(layers), x)
    config = QuantizationConfig(target_cpu="avx512-vnni")  # no CPU probe in the timings
    start = time.perf_counter()
    quantizer.ranges(config)
    calibration = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        quantizer.quantize(config)
        times.append(time.perf_counter() - start)
    return {"layers": layers, "nodes": 2 * layers, "calibration_s": calibration,
            "candidate_s": statistics.median(times), "candidate_runs_s": times}  # fmt: skip


def exponent(rows: list[dict], key: str) -> float:
    first, last = rows[0], rows[-1]
    return math.log(last[key] / first[key]) / math.log(last["nodes"] / first["nodes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "quantizer_scaling.json"
    )
    args = parser.parse_args()
    measure(4, 1)  # warm-up: imports, the crash-check child's start
    rows = [measure(n, args.repeats) for n in sorted(args.sizes)]
    print(f"{'nodes':>6s} {'candidate s':>12s} {'per node ms':>12s} {'calibration s':>14s}")
    for r in rows:
        per_node = 1e3 * r["candidate_s"] / r["nodes"]
        calibration = r["calibration_s"]
        print(f"{r['nodes']:6d} {r['candidate_s']:12.3f} {per_node:12.3f} {calibration:14.3f}")
    growth = {k: exponent(rows, k) for k in ("candidate_s", "calibration_s")}
    print(f"growth exponent (1 = linear, 2 = quadratic): candidate {growth['candidate_s']:.2f}, "
          f"calibration {growth['calibration_s']:.2f}; CPU {machine_info()['cpu_model']}")
    write_result(args.out, {"benchmark": "quantizer_scaling", "machine": machine_info(),
                            "command": " ".join(["python", *sys.argv]), "rows": rows,
                            "growth_exponent": growth})  # fmt: skip


if __name__ == "__main__":
    main()
