"""Search throughput with 1 and 2 local workers on the digits-CNN joint search.

Usage: nice python benchmarks/workers_scaling.py [--trials 200] [--repeats 2]
    [--out benchmarks/results/workers_scaling.json]

The search is the bundled ``configs/search-digits-cnn.toml`` (channel multipliers on the
three conv layers and 4/8-bit weights per layer, NSGA-II), on a digits-cnn trained once
(seed 0) and exported outside the timings, in two variants:

* ``latency``: the config as bundled (latency at batch 1 and 256 among the objectives:
  each trial's timing holds the run directory's latency lock, one worker at a time);
* ``no-latency``: the same search with accuracy, loss and size as objectives (trials are
  still timed, for the report, but not under the lock: the workers time side by side).

Each variant runs with ``workers = 1`` and ``workers = 2`` (``onnxopt search`` in a fresh
run directory, ``--no-export``), alternating the order between repeats. The figure is the
study's own: trials / (first trial's start to last trial's end), the median over repeats;
the speed-up is 2 workers' over 1 worker's. A worker process's start (an interpreter, the
data, the calibration) falls inside the window when it is later than the first trial: it
is what a user waits for too. Trials at a point an earlier trial measured copy its results
(``same_as``); the measured trials per second are reported beside the trials per second,
since the workers' samplers (seeded ``seed + i``) revisit points at other rates.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_common import git_state, machine_info, write_result

CONFIG = Path("configs/search-digits-cnn.toml")
TARGET = 1.6


def export_base(folder: Path) -> Path:
    from onnxopt.data.digits import load_digits
    from onnxopt.exporters.torch_onnx import export_module
    from onnxopt.models.training import train

    path = folder / "digits-cnn.onnx"
    trained = train("digits-cnn", load_digits(), seed=0, progress=False)
    export_module(trained.module, trained.input_shape, path)
    return path


def config_text(base: Path, variant: str, trials: int, workers: int) -> str:
    text = CONFIG.read_text()
    text = re.sub(r"\[model\]\n(.*\n)*?\n", f'[model]\nonnx = "{base}"\n\n', text, count=1)
    text = re.sub(r"^n_trials = \d+", f"n_trials = {trials}\nworkers = {workers}", text,
                  flags=re.M)  # fmt: skip
    if variant == "no-latency":
        text = re.sub(r"\[search\.metrics\.latency\w*\]\n[^\[]*", "", text)
    return text


def run(config: Path, run_dir: Path) -> dict:
    from onnxopt.optimizer.search.study import load_study, resolve_source

    cmd = [sys.executable, "-m", "onnxopt", "search", str(config), "--run-dir", str(run_dir),
           "--no-export", "--no-progress"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr}")
    seconds = time.perf_counter() - start
    study = load_study(resolve_source(str(run_dir)), "onnxopt-search")
    trials = study.get_trials(deepcopy=False)
    first = min(t.datetime_start for t in trials).timestamp()
    last = max(t.datetime_complete for t in trials).timestamp()
    by_worker = Counter(t.user_attrs.get("worker", "?") for t in trials)
    measured = [t for t in trials if "same_as" not in t.user_attrs]
    return {"trials": len(trials), "trials_per_s": len(trials) / (last - first),
            "measured": len(measured), "measured_per_s": len(measured) / (last - first),
            "window_s": last - first, "command_s": seconds,
            "complete": sum(t.state.name == "COMPLETE" for t in trials),
            "per_worker": sorted(by_worker.values(), reverse=True),
            "second_worker_start_s": _second_start(trials, first)}  # fmt: skip


def _second_start(trials, first: float) -> float | None:
    """Seconds from the first trial's start to the first trial of another worker."""
    starts: dict[str, float] = {}
    for t in trials:
        w = t.user_attrs.get("worker", "?")
        starts[w] = min(starts.get(w, math.inf), t.datetime_start.timestamp())
    later = sorted(starts.values())[1:]
    return later[0] - first if later else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["no-latency", "latency"],
                        choices=["no-latency", "latency"])  # fmt: skip
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/workers_scaling.json"))  # fmt: skip
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="onnxopt-workers-") as tmp:
        folder = Path(tmp)
        base = export_base(folder)
        for rep in range(args.repeats):
            for variant in args.variants:
                entry = results.setdefault(variant, {"1": [], "2": []})
                for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
                    config = folder / f"{variant}-{workers}.toml"
                    config.write_text(config_text(base, variant, args.trials, workers))
                    result = run(config, folder / f"run-{variant}-{workers}-{rep}")
                    entry[str(workers)].append(result)
                    print(f"[{rep + 1}/{args.repeats}] {variant}, {workers} worker(s): "
                          f"{result['trials_per_s']:.1f} trials/s ({result['per_worker']})",
                          file=sys.stderr)  # fmt: skip
    summary = {}
    for variant, entry in results.items():
        rates = {w: statistics.median(r["trials_per_s"] for r in runs) for w, runs in entry.items()}
        fresh = {w: statistics.median(r["measured_per_s"] for r in runs)
                 for w, runs in entry.items()}  # fmt: skip
        summary[variant] = {"trials_per_s": rates, "speedup": rates["2"] / rates["1"],
                            "measured_per_s": fresh,
                            "measured_speedup": fresh["2"] / fresh["1"],
                            "target": TARGET}  # fmt: skip
        print(f"{variant:>10}: 1 worker {rates['1']:.1f} trials/s, 2 workers {rates['2']:.1f}: "
              f"{rates['2'] / rates['1']:.2f}x (target {TARGET}x); trials measured (not "
              f"copied from an earlier trial at the same point): {fresh['1']:.1f} vs "
              f"{fresh['2']:.1f}/s, {fresh['2'] / fresh['1']:.2f}x")
    payload = {"benchmark": "workers_scaling", "git": git_state(), "machine": machine_info(),
               "config": str(CONFIG), "n_trials": args.trials, "repeats": args.repeats,
               "summary": summary, "runs": results}  # fmt: skip
    write_result(args.out, payload)


if __name__ == "__main__":
    main()
