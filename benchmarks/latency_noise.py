"""Can a search's latency figure rank a model against an identical copy of itself?

    PYTHONPATH=. python benchmarks/latency_noise.py [--repeats 10] [--rounds 30]
        [--out benchmarks/results/latency_noise.json]

Three sessions: an 8-bit digits-mlp (``A``), the same bytes loaded again (``A'``) and the fp32
model (``B``), 1 thread each, batch 1. Per repeat:

* search style: ``A`` then ``A'`` timed one after the other with a search trial's budget
  (``[search.evaluation]`` defaults: 2 warm-up runs, at least 5 runs and 5 ms); the ratio of
  the two medians is how far noise alone puts a model from itself;
* interleaved (what the export now does, :func:`onnxopt.optimizer.evaluate.interleaved.
  measure_interleaved`): all three in rotating rounds until the 95% intervals of the medians
  are within 5% or ``--rounds``; ``A`` and ``A'`` should tie (intervals overlap).

Prints the figures and writes them as JSON with the machine (CPU, load average).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import numpy as np
import onnx
from bench_common import machine_info, write_result

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.data.digits import load_digits
from onnxopt.exporters.torch_onnx import export_module
from onnxopt.models.training import train
from onnxopt.optimizer.evaluate.interleaved import measure_interleaved
from onnxopt.optimizer.evaluate.latency import LatencyBudget, make_batch, summarize, time_runs
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.runtime import get_backend

SEARCH_BUDGET = LatencyBudget(warmup=2, repeats=5, min_time_s=0.005)


def _models(folder: Path) -> tuple[dict[str, bytes], np.ndarray]:
    import torch

    torch.set_num_threads(1)
    digits = load_digits()
    trained = train("digits-mlp", digits, seed=0, progress=False)
    path = export_module(trained.module, trained.input_shape, folder / "mlp.onnx").path
    fp32 = onnx.load(path)
    q8 = Quantizer(fp32, digits.calibration.x).quantize(QuantizationConfig()).model
    data = q8.SerializeToString()
    return {"A": data, "A'": data, "B": fp32.SerializeToString()}, digits.val.x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/latency_noise.json"))
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        models, x = _models(Path(tmp))
    backend = get_backend()
    sessions = {k: backend.load(v, threads=1) for k, v in models.items()}
    batch = make_batch(np.asarray(x, np.float32), 1)
    runners = {k: s.runner({s.inputs[0].name: batch}) for k, s in sessions.items()}
    machine = machine_info()
    search_ratios, ties, separated, interleaved_ratios, rounds = [], 0, 0, [], []
    for _ in range(args.repeats):
        a = summarize(1, time_runs(runners["A"], SEARCH_BUDGET)).median_ms
        a2 = summarize(1, time_runs(runners["A'"], SEARCH_BUDGET)).median_ms
        search_ratios.append(a / a2)
        iv = measure_interleaved(runners, max_rounds=args.rounds)
        ties += iv["A"].overlaps(iv["A'"])
        separated += not iv["A"].overlaps(iv["B"])
        interleaved_ratios.append(iv["A"].median / iv["A'"].median)
        rounds.append(iv["A"].rounds)

    def off(ratios: list[float]) -> float:
        return max(abs(r - 1) for r in ratios)

    result = {
        "repeats": args.repeats,
        "max_rounds": args.rounds,
        "search_style": {
            "ratio_a_to_copy": search_ratios,
            "max_off_percent": 100 * off(search_ratios),
            "repeats_off_by_more_than_5_percent": sum(abs(r - 1) > 0.05 for r in search_ratios),
        },
        "interleaved": {
            "ratio_a_to_copy": interleaved_ratios,
            "max_off_percent": 100 * off(interleaved_ratios),
            "copies_tied": ties,
            "a_vs_fp32_separated": separated,
            "rounds_median": statistics.median(rounds),
        },
        "machine": {**machine, "load_average_end": list(os.getloadavg())},
    }
    s, i = result["search_style"], result["interleaved"]
    print(f"CPU {machine['cpu_model']}, load average {machine['load_average_start']}")
    print(f"search style: A vs its copy off by up to {s['max_off_percent']:.1f}%, "
          f"> 5% in {s['repeats_off_by_more_than_5_percent']}/{args.repeats} repeats")
    print(f"interleaved: off by up to {i['max_off_percent']:.1f}%, copies tied in "
          f"{ties}/{args.repeats}, 8-bit vs fp32 told apart in {separated}/{args.repeats}, "
          f"median {i['rounds_median']} rounds")
    write_result(args.out, result)


if __name__ == "__main__":
    main()
