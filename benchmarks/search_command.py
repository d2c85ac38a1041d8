"""Search throughput on digits-mlp: trials per second and time to the first trial.

Usage: python benchmarks/search_command.py [--trials 200] [--repeats 3]
    [--out benchmarks/results/search_command.json]

digits-mlp is trained (seed 0) and exported to ONNX once, outside the timings, so each
search starts from an ONNX file and never imports torch. Every search is the real command,
``python -m onnxopt search CONFIG --no-progress --no-export``, started as a subprocess, on:

* the lab's space (``lab``, 18 points: data_in width 4/8 x weight 2/4/8 x bias 2/4/8 on every
  linear layer by type, fractions ``"NA"``), where samplers revisit points and the build
  cache serves them; and a 216-point space (``-216``: three linear layers by name, each with
  data_in width 4/8 and weight width 2/4/8) where most trials build a new candidate;
* two objectives, validation accuracy (the full 360-sample split) and batch-1 latency, so
  latency is measured in every trial (``batch_sizes = [1]``, 2 warm-up runs, 10 timed runs);
* the default storage (Optuna's journal file in the run directory) unless said otherwise.

Figures per run, read back from the study's own timestamps:

* ``first_trial_s``: from just before the command starts to the end of the first trial
  (interpreter start, imports, data, base model, baseline measurement included);
* ``trials_per_s``: trials divided by the time from the first trial's start to the last
  trial's end (the search loop: sampling, building, measuring and storing);
* ``wall_s``: the whole command, reports included.

Configurations: random, NSGA-II and TPE with one worker; SQLite storage (random) for
comparison; and random with two local workers (``--workers 2``) against one. Each is run
``--repeats`` times and the median is reported. ``--wide`` adds heavier trials: the example
joint search on digits-wide (``configs/search-digits-wide-joint.toml``, 100 trials, latency at
batch 256) with one and with two workers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import git_state, machine_info

from onnxopt.optimizer.search.study import JOURNAL_FILE, load_study

RUNS = {  # name: (sampler, space, workers, storage kind)
    "random": ("random", "lab", 1, "journal"),
    "nsgaii": ("nsgaii", "lab", 1, "journal"),
    "tpe": ("tpe", "lab", 1, "journal"),
    "random-216": ("random", "by-name", 1, "journal"),
    "nsgaii-216": ("nsgaii", "by-name", 1, "journal"),
    "tpe-216": ("tpe", "by-name", 1, "journal"),
    "random-sqlite": ("random", "lab", 1, "sqlite"),
    "random-2-workers": ("random", "lab", 2, "journal"),
}
TARGETS = {"random": 100.0, "nsgaii": 100.0, "tpe": 50.0}
TARGETS.update({f"{k}-216": v for k, v in list(TARGETS.items())})
FIRST_TRIAL_TARGET_S = 2.0


def export_base(folder: Path) -> tuple[Path, tuple[str, ...]]:
    """Train and export digits-mlp; return the file and its linear layers' node names."""
    import onnx

    from onnxopt.data.digits import load_digits
    from onnxopt.exporters.torch_onnx import export_module
    from onnxopt.models.training import train

    path = folder / "digits-mlp.onnx"
    trained = train("digits-mlp", load_digits(), seed=0, progress=False)
    export_module(trained.module, trained.input_shape, path)
    nodes = onnx.load(path).graph.node
    return path, tuple(n.name for n in nodes if n.op_type in ("Gemm", "MatMul"))


LAB_SPACE = """[search.quantization.by_type.linear]
data_in_width = [4, 8]
weight_width = [2, 4, 8]
bias_width = [2, 4, 8]
data_in_frac_width = ["NA"]
weight_frac_width = ["NA"]
bias_frac_width = ["NA"]
"""


def config_text(model: Path, layers: tuple[str, ...], sampler: str, space: str, trials: int) -> str:
    body = f'[model]\nonnx = "{model}"\n[data]\ndataset = "digits"\n'
    if space == "lab":
        body += LAB_SPACE
    for name in layers if space == "by-name" else ():
        body += (f"[search.quantization.by_name.{name}]\n"
                 "data_in_width = [4, 8]\nweight_width = [2, 4, 8]\n")  # fmt: skip
    return (
        body
        + f"""
[search.strategy]
sampler = "{sampler}"
n_trials = {trials}
seed = 0
[search.metrics.accuracy]
[search.metrics.latency]
[search.evaluation]
batch_sizes = [1]
warmup = 2
repeats = 10
min_time_s = 0
"""
    )


def run_once(config: Path, run_dir: Path, workers: int, storage: str, clean: bool = True) -> dict:
    """One search command; figures from the study's trial timestamps."""
    if clean:
        shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "onnxopt", "search", str(config), "--run-dir", str(run_dir),
           "--no-progress", "--no-export", "--workers", str(workers)]  # fmt: skip
    spec = str(run_dir / JOURNAL_FILE)
    if storage == "sqlite":
        spec = f"sqlite:///{run_dir / 'study.db'}"
        cmd += ["--storage", spec]
    start = time.time()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.time() - start
    trials = load_study(spec).get_trials(deepcopy=False)
    first_start = min(t.datetime_start for t in trials).timestamp()
    ends = sorted(t.datetime_complete.timestamp() for t in trials)
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    return {
        "trials": len(trials),
        "complete": sum(t.state.name == "COMPLETE" for t in trials),
        "unique_points": len({tuple(sorted(t.params.items())) for t in trials}),
        "first_trial_s": ends[0] - start,
        "trials_per_s": len(trials) / (ends[-1] - first_start),
        "trial_median_ms": statistics.median(durations) * 1e3,
        "wall_s": wall,
    }


def wide_workers(folder: Path, repeats: int) -> dict:
    """The digits-wide joint search with 1 and 2 workers (the base trained once, copied)."""
    config = Path("configs/search-digits-wide-joint.toml")
    seed_dir = folder / "wide-seed"
    run_once(config, seed_dir, 1, "journal")  # trains and exports base.onnx once
    out: dict[str, dict] = {}
    for _ in range(repeats):
        for workers in (1, 2):
            run_dir = folder / f"wide-{workers}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir()
            shutil.copy(seed_dir / "base.onnx", run_dir / "base.onnx")
            run = run_once(config, run_dir, workers, "journal", clean=False)
            out.setdefault(f"wide-{workers}-workers", {"workers": workers, "runs": []})[
                "runs"
            ].append(run)
    return out


def summarize(runs: list[dict]) -> dict:
    keys = ("first_trial_s", "trials_per_s", "trial_median_ms", "wall_s")
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out.update({k: runs[0][k] for k in ("trials", "complete", "unique_points")})
    out["runs"] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="a subset of runs")
    parser.add_argument("--wide", action="store_true", help="also digits-wide, 1 vs 2 workers")
    default_out = Path("benchmarks/results/search_command.json")
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    names = args.only or list(RUNS)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, layers = export_base(folder)
        results: dict[str, dict] = {}
        for rep in range(args.repeats):  # interleaved: drift in load hits every config alike
            for name in names:
                sampler, space, workers, storage = RUNS[name]
                config = folder / f"{name}.toml"
                config.write_text(config_text(model, layers, sampler, space, args.trials))
                run = run_once(config, folder / f"run-{name}", workers, storage)
                entry = {"sampler": sampler, "space": space, "workers": workers, "storage": storage}
                results.setdefault(name, {**entry, "runs": []})["runs"].append(run)
                print(f"[{rep + 1}/{args.repeats}] {name}: {run['trials_per_s']:.1f} trials/s, "
                      f"first trial {run['first_trial_s']:.2f} s", file=sys.stderr)  # fmt: skip
        if args.wide:
            results.update(wide_workers(folder, args.repeats))
    for entry in results.values():
        entry.update(summarize(entry.pop("runs")))
    report(results, args.trials)
    payload = {"benchmark": "search_command", "git": git_state(), "machine": machine_info(),
               "n_trials": args.trials, "repeats": args.repeats,
               "space_points": {"lab": 18, "by-name": 6 ** len(layers)},
               "targets_trials_per_s": TARGETS, "target_first_trial_s": FIRST_TRIAL_TARGET_S,
               "results": results}  # fmt: skip
    for one, two in (("random", "random-2-workers"), ("wide-1-workers", "wide-2-workers")):
        if one in results and two in results:
            payload.setdefault("two_worker_speedup", {})[one] = (
                results[two]["trials_per_s"] / results[one]["trials_per_s"]
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"-> {args.out}")


def report(results: dict, trials: int) -> None:
    print(f"\n{trials} trials on digits-mlp (latency in every trial), medians of the repeats")
    print(f"{'run':18s} {'trials/s':>9s} {'target':>7s} {'1st trial s':>11s} "
          f"{'trial ms':>9s} {'wall s':>7s} {'unique':>7s}")  # fmt: skip
    for name, r in results.items():
        target = TARGETS.get(name)
        print(
            f"{name:18s} {r['trials_per_s']:9.1f} {target or '':>7} {r['first_trial_s']:11.2f} "
            f"{r['trial_median_ms']:9.2f} {r['wall_s']:7.2f} {r['unique_points']:7d}"
        )
    for one, two in (("random", "random-2-workers"), ("wide-1-workers", "wide-2-workers")):
        if one in results and two in results:
            ratio = results[two]["trials_per_s"] / results[one]["trials_per_s"]
            print(f"2 workers vs 1 ({one}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
