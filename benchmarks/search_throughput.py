"""Search throughput against a bare Optuna + onnxruntime loop, side by side in one process.

Usage: nice python benchmarks/search_throughput.py [--trials 40] [--repeats 1]
    [--only mlp-lab-random ...] [--bare-storage memory|journal]
    [--out benchmarks/results/search_throughput.json]
Full run: --trials 150 --repeats 3.

For every cell (model digits-mlp or digits-wide x space ``lab`` or ``joint`` x sampler
random, TPE or NSGA-II) the same process runs, one after the other (the order alternating
between repeats, so drift in the machine's load hits both alike):

* **onnxopt**: ``run_search`` (what ``onnxopt search --no-export`` runs) on the default
  journal storage in a fresh run directory;
* **bare**: the loop of :mod:`bare_loop` (Optuna + ``onnxruntime.quantization``), doing the
  same work per trial.

Both score validation accuracy (the full 360-sample split) and latency with one protocol
(one intra-op thread, 2 warm-up and 20 timed runs, batch 1 on ``lab``, 256 on ``joint``);
objectives accuracy and latency, no constraints. ``lab`` is the lab's 18 points (data_in
4/8 x weight 2/4/8 x bias 2/4/8 on every linear layer; onnxopt keeps the configured sampler
there, ``exhaust_small_spaces = false``, as the bare loop does); ``joint`` adds width
multipliers on the hidden linear layers (activation importance, ridge refit) to weight 4/8 x
data_in 4/8.

Figures per run, from each study's own timestamps: ``trials_per_s`` = trials / (first
trial's start to last trial's end) and the median trial; the ratio is onnxopt's trials/s
over the bare loop's (medians over repeats). ``fsyncs_per_trial``: ``os.fsync`` calls in
onnxopt's trial window (the benchmark wraps ``os.fsync``) per trial. Base models are trained
(seed 0) and exported once, outside the timings, into ``--models``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
import optuna
from bare_loop import BareLoop, Protocol
from bench_common import git_state, machine_info, write_result

MODELS = ("digits-mlp", "digits-wide")
SPACES = ("lab", "joint")
SAMPLERS = ("random", "tpe", "nsgaii")
MULTIPLIERS = {
    "digits-mlp": (0.125, 0.25, 0.5, 1.0),
    "digits-wide": (0.0625, 0.125, 0.25, 0.5, 1.0),
}
BATCH = {"lab": 1, "joint": 256}
WARMUP, REPEATS = 2, 20
TARGETS = {"lab": 0.9, "joint": 0.8}
FSYNC_TARGET = 4.0


class FsyncCounter:
    """Wraps ``os.fsync`` in this process and keeps the time of every call."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._real = os.fsync

    def __enter__(self) -> FsyncCounter:
        def counted(fd):
            self.times.append(time.time())
            return self._real(fd)

        os.fsync = counted
        return self

    def __exit__(self, *exc) -> None:
        os.fsync = self._real

    def between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.times)


def export_models(folder: Path) -> dict[str, Path]:
    """Train and export each model once (kept in ``folder`` for later runs)."""
    from onnxopt.data.digits import load_digits
    from onnxopt.exporters.torch_onnx import export_module
    from onnxopt.models.training import train

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in MODELS:
        path = folder / f"{name}.onnx"
        if not path.is_file():
            trained = train(name, load_digits(), seed=0, progress=False)
            export_module(trained.module, trained.input_shape, path)
        paths[name] = path
    return paths


def hidden_layers(path: Path) -> list[str]:
    """Linear layers but the last (the output layer keeps its classes)."""
    nodes = [n.name for n in onnx.load(path).graph.node if n.op_type in ("Gemm", "MatMul")]
    return nodes[:-1]


def config_text(model: str, path: Path, space: str, sampler: str, trials: int) -> str:
    body = f'[model]\nonnx = "{path}"\n[data]\ndataset = "digits"\n'
    if space == "lab":
        body += (
            "[search.quantization.by_type.linear]\ndata_in_width = [4, 8]\n"
            'weight_width = [2, 4, 8]\nbias_width = [2, 4, 8]\ndata_in_frac_width = ["NA"]\n'
            'weight_frac_width = ["NA"]\nbias_frac_width = ["NA"]\n'
        )
    else:
        body += '[search.width]\nimportance = "activation"\nrefit = "ridge"\n'
        for layer in hidden_layers(path):
            body += (f'[search.width.layers.{layer}]\nmode = "output_only"\n'
                     f"channel_multiplier = {list(MULTIPLIERS[model])}\n")  # fmt: skip
        body += (
            "[search.quantization.by_type.linear]\nweight_width = [4, 8]\ndata_in_width = [4, 8]\n"
        )
    return body + (
        f'[search.strategy]\nsampler = "{sampler}"\nn_trials = {trials}\nseed = 0\n'
        "exhaust_small_spaces = false\n"
        "[search.metrics.accuracy]\n[search.metrics.latency]\n"
        f"[search.evaluation]\nbatch_sizes = [{BATCH[space]}]\nwarmup = {WARMUP}\n"
        f"repeats = {REPEATS}\nmin_time_s = 0\nthreads = 1\n"
    )


def window(trials) -> tuple[float, float, float, float]:
    """(trials/s, median trial ms, window start, window end) from a study's timestamps."""
    start = min(t.datetime_start for t in trials).timestamp()
    end = max(t.datetime_complete for t in trials).timestamp()
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    return len(trials) / (end - start), statistics.median(durations) * 1e3, start, end


def run_onnxopt(config_path: Path, run_dir: Path, fsyncs: FsyncCounter) -> dict:
    from onnxopt.config.search import load_search_config
    from onnxopt.optimizer.search.run import run_search

    shutil.rmtree(run_dir, ignore_errors=True)
    result = run_search(load_search_config(config_path), run_dir=run_dir, progress=False)
    trials = result.study.get_trials(deepcopy=False)
    rate, median_ms, start, end = window(trials)
    return {
        "trials": len(trials), "trials_per_s": rate, "trial_median_ms": median_ms,
        "fsyncs_per_trial": fsyncs.between(start, end) / len(trials),
        "complete": sum(t.state.name == "COMPLETE" for t in trials),
    }  # fmt: skip


def bare_loop(model: str, path: Path, space: str, config_path: Path) -> BareLoop:
    """The bare loop of one cell (the width scaler built as onnxopt's config says)."""
    from onnxopt.config.search import load_search_config
    from onnxopt.data.digits import load_digits
    from onnxopt.optimizer.width import WidthScaler, refit_inputs

    data = load_digits()
    base = onnx.load(path)
    dims: dict[str, tuple] = {"data_in": (4, 8), "weight": (2, 4, 8), "bias": (2, 4, 8)}
    scaler = width = None
    if space == "joint":
        width = load_search_config(config_path).search.width
        scaler = WidthScaler(base, refit_inputs(data))
        groups = scaler.search_space(width)
        dims = {**{f"w.{g}": c for g, c in groups.items()}, "data_in": (4, 8), "weight": (4, 8)}
    protocol = Protocol(BATCH[space], WARMUP, REPEATS)
    return BareLoop(base, dims, data.calibration.x, data.val.x, data.val.y, protocol,
                    scaler, width)  # fmt: skip


def run_bare(loop: BareLoop, sampler: str, trials: int, storage: str, folder: Path) -> dict:
    store = None
    if storage == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        journal = folder / "bare.journal"
        journal.unlink(missing_ok=True)
        store = JournalStorage(JournalFileBackend(str(journal)))
    study = loop.run(sampler, trials, store)
    rate, median_ms, _, _ = window(study.get_trials(deepcopy=False))
    return {"trials": trials, "trials_per_s": rate, "trial_median_ms": median_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=1)
    cells = [f"{m.removeprefix('digits-')}-{s}-{a}" for m, s, a in
             itertools.product(MODELS, SPACES, SAMPLERS)]  # fmt: skip
    parser.add_argument("--only", nargs="*", choices=cells, help="a subset of cells")
    parser.add_argument("--bare-storage", choices=("memory", "journal"), default="memory")
    parser.add_argument("--update", action="store_true",
                        help="keep the other cells of an earlier --out file (each cell "
                             "records its trials, repeats and machine)")  # fmt: skip
    parser.add_argument(
        "--models", type=Path, default=Path(tempfile.gettempdir()) / "onnxopt-bench-models"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/search_throughput.json")
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from threadpoolctl import threadpool_limits

    paths = export_models(args.models)
    chosen = args.only or cells
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp, FsyncCounter() as fsyncs, threadpool_limits(1):
        folder = Path(tmp)
        loops = {}
        for rep in range(args.repeats):
            for cell in chosen:
                short, space, sampler = cell.split("-")
                model = f"digits-{short}"
                config = folder / f"{cell}.toml"
                config.write_text(config_text(model, paths[model], space, sampler, args.trials))
                key = (model, space)
                if key not in loops:
                    loops[key] = bare_loop(model, paths[model], space, config)
                entry = results.setdefault(
                    cell,
                    {"model": model, "space": space, "sampler": sampler, "onnxopt": [], "bare": []},
                )
                order = ("onnxopt", "bare") if rep % 2 == 0 else ("bare", "onnxopt")
                for which in order:
                    if which == "onnxopt":
                        run = run_onnxopt(config, folder / f"run-{cell}", fsyncs)
                    else:
                        run = run_bare(loops[key], sampler, args.trials, args.bare_storage, folder)
                    entry[which].append(run)
                print(f"[{rep + 1}/{args.repeats}] {cell}: onnxopt "
                      f"{entry['onnxopt'][-1]['trials_per_s']:.1f} trials/s, bare "
                      f"{entry['bare'][-1]['trials_per_s']:.1f}", file=sys.stderr)  # fmt: skip
    for entry in results.values():
        summarize(entry)
        entry.update({"n_trials": args.trials, "repeats": args.repeats,
                      "machine": machine_info(), "git": git_state()})  # fmt: skip
    if args.update and args.out.is_file():
        kept = json.loads(args.out.read_text())["results"]
        results = {**{c: r for c, r in kept.items() if c not in results}, **results}
        results = {c: results[c] for c in cells if c in results}
    report(results, args)
    payload = {"benchmark": "search_throughput", "git": git_state(), "machine": machine_info(),
               "n_trials": args.trials, "repeats": args.repeats,
               "bare_storage": args.bare_storage, "targets_ratio": TARGETS,
               "target_fsyncs_per_trial": FSYNC_TARGET,
               "protocol": {"warmup": WARMUP, "repeats": REPEATS, "batch": BATCH, "threads": 1},
               "results": results}  # fmt: skip
    write_result(args.out, payload)


def summarize(entry: dict) -> None:
    """Medians over repeats, and the ratio of the medians."""
    for which in ("onnxopt", "bare"):
        runs = entry[which]
        keys = [k for k in runs[0] if k not in ("trials", "complete")]
        entry[which] = {**{k: statistics.median(r[k] for r in runs) for k in keys}, "runs": runs}
    entry["ratio"] = entry["onnxopt"]["trials_per_s"] / entry["bare"]["trials_per_s"]
    entry["target"] = TARGETS[entry["space"]]


def report(results: dict, args) -> None:
    print(f"\n{args.trials} trials per run, medians of {args.repeats} repeat(s); bare storage "
          f"{args.bare_storage}")  # fmt: skip
    print(f"{'cell':22s} {'onnxopt/s':>9s} {'bare/s':>7s} {'ratio':>6s} {'target':>6s} "
          f"{'trial ms':>8s} {'bare ms':>7s} {'fsync/trial':>11s}")  # fmt: skip
    for cell, r in results.items():
        o, b = r["onnxopt"], r["bare"]
        print(f"{cell:22s} {o['trials_per_s']:9.1f} {b['trials_per_s']:7.1f} {r['ratio']:6.2f} "
              f"{r['target']:6.1f} {o['trial_median_ms']:8.1f} {b['trial_median_ms']:7.1f} "
              f"{o['fsyncs_per_trial']:11.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
