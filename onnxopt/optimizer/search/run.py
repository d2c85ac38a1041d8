"""Run a search end to end: prepare the context, open the study, optimize, pick the best.

>>> result = run_search(load_search_config(path), run_dir=Path("runs/x"))  # doctest: +SKIP
>>> result.best  # feasible Pareto set (or the best trial), exported with export_best
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from onnxopt.atomic import atomic_folder, sweep_stale, write_text
from onnxopt.config.search import SearchConfig
from onnxopt.errors import OnnxoptError, UsageError
from onnxopt.optimizer.search.context import SearchContext
from onnxopt.optimizer.search.export import ExportedTrial, export_trial
from onnxopt.optimizer.search.final_latency import Remeasured, remeasure_front
from onnxopt.optimizer.search.locks import LATENCY_LOCK, FileLock, trial_slot_lock
from onnxopt.optimizer.search.objective import (
    Objective,
    objective_directions,
    objective_names,
)
from onnxopt.optimizer.search.opening import open_search, precheck, restart
from onnxopt.optimizer.search.parallel import (
    LOG_DIR,
    pinned,
    spawn_workers,
    stop_workers,
    wait_workers,
)
from onnxopt.optimizer.search.pareto import best_trials, is_feasible
from onnxopt.optimizer.search.study import (
    N_TRIALS_ATTR,
    STUDY_NAME,
    counted_trials,
    finished_trials,
    load_study,
    recover_interrupted,
    storage_spec,
)
from onnxopt.optimizer.search.worker import TrialLoop
from onnxopt.runtime.contained import share_checks, warm_up

__all__ = ["SearchContext", "SearchResult", "export_best", "run_search", "run_worker"]


def _quiet(_: str) -> None:
    """Discards notes (library callers that do not print)."""


@dataclass
class SearchResult:
    """A finished (or stopped) search."""

    context: SearchContext
    study: optuna.Study
    baseline: dict
    best: list[FrozenTrial]
    seconds: float
    recovered: int = 0
    storage: str = ""
    exported: list[ExportedTrial] = field(default_factory=list)
    remeasured: Remeasured | None = None
    """The front's latencies timed again interleaved before export (None: not done)."""
    fp32_test: dict | None = None
    """The fp32 base model on the test split, measured like the exports: ``metrics`` and
    ``latency_ms`` (per batch size: median, quartiles)."""

    @property
    def objectives(self) -> list[str]:
        return objective_names(self.context.config.search)


def _limit(ctx: SearchContext) -> int:
    """n_trials, or the number of points when brute force visits each once."""
    strategy = ctx.config.search.strategy
    if ctx.space.sampler == "brute-force":
        return min(strategy.n_trials, ctx.space.size)
    return strategy.n_trials


def _loop(
    ctx: SearchContext, study, storage, spec: str, name: str, callbacks=(), limit=None,
    index: int = 0,
) -> int:  # fmt: skip
    # latency that decides is timed one worker at a time; latency only reported is timed
    # beside the other workers' accuracy work
    lock = FileLock(ctx.run_dir / LATENCY_LOCK) if ctx.config.search.latency_decides else None
    evaluator = ctx.evaluator.for_trials(study.user_attrs["baseline"], ctx.reference(), lock)
    objective = Objective(ctx.space, ctx.builder, evaluator)
    loop = TrialLoop(
        study, storage, objective, _limit(ctx) if limit is None else limit,
        slot_lock=trial_slot_lock(spec, storage, name),
        timeout=ctx.config.search.strategy.timeout, callbacks=callbacks,
    )  # fmt: skip
    workers = ctx.config.search.strategy.workers
    if workers == 1:
        return loop.run()
    if ctx.builder.width_config is not None:  # one refit per width choice for all workers
        ctx.builder.share(ctx.run_dir / LOG_DIR, f"{ctx.base_sha256()}:{ctx.dataset.fingerprint()}")
    from threadpoolctl import threadpool_limits

    # several workers share the cores: one BLAS thread each for refits and calibration,
    # and each worker on its own cores
    with threadpool_limits(limits=1), pinned(index, workers, ctx.config.search.evaluation.threads):
        return loop.run()


def run_search(
    config: SearchConfig,
    *,
    run_dir: Path,
    storage: str | None = None,
    study_name: str | None = None,
    resume: bool = False,
    reclaim: bool = False,
    restart: bool = False,
    progress: bool = True,
    notify: Callable[[str], None] = _quiet,
    say: Callable[[str], None] = _quiet,
) -> SearchResult:
    """Run (or resume, or join) the search of ``config`` until n_trials have finished.

    With ``strategy.workers > 1`` the other workers run as child processes on the same
    storage (see :mod:`.parallel`) while this one shows the progress.

    Args:
        config: The search config.
        run_dir: Where the journal, the base model and outputs go.
        storage: An Optuna RDB URL or journal file instead of ``run_dir/study.journal``.
        study_name: Join this study when it exists (workers on several machines).
        resume: Continue the stored study (trials a kill interrupted are re-run).
        reclaim: Also re-run trials left RUNNING by workers on other hosts (only when no
            other worker is running).
        restart: Move the run directory's previous search aside first (and allow --resume
            to find none).
        progress: Show a progress bar with the best values so far.
        notify: Receives one line per change made to the user's model or the storage.
        say: Receives progress lines (training, baseline, ...).

    Raises:
        ConfigError, UsageError: Before anything is written, for a config or storage
            problem (a refused command changes nothing on disk).
        OnnxoptError: When a worker process fails.
    """
    start = time.perf_counter()
    spec = storage_spec(run_dir, storage)
    name = study_name or STUDY_NAME
    join = resume or study_name is not None or restart
    if restart:
        moved = _restart(run_dir, spec, name, own_journal=storage is None)
        if moved is not None:
            say(f"moved the previous search to {moved}")
    retry_s = config.search.storage.retry_s
    stored = precheck(spec, name, resume=resume and not restart, join=join, retry_s=retry_s)
    workers = config.search.strategy.workers
    children: list = []
    # (not when a workers folder is there already: a refusal must leave it as it was)
    early = workers > 1 and stored.attrs is None and not (Path(run_dir) / LOG_DIR).exists()
    if early:
        # a new study: the workers start now and import while this process trains, loads,
        # measures the baseline and makes the study; they wait for it
        made = _spawned_folders(Path(run_dir))
        share_checks(Path(run_dir) / LOG_DIR)  # the workers skip what this process checked
        children = spawn_workers(workers - 1, Path(run_dir), spec, name)
    warm_up()  # the first candidate's probe does not wait for its server
    try:
        ctx = SearchContext.prepare(
            config, run_dir, notify, expected_sha256=stored.base_sha256, progress=say
        )
        limit = _target(ctx, stored.attrs)
    except BaseException:
        stop_workers(children)
        if early:  # a refusal leaves nothing behind: not the workers' logs either
            _remove_spawned(made)
        share_checks(None)
        raise
    try:
        study, store = open_search(
            ctx, spec, name, join=join, limit=limit, storage=stored.storage, notify=notify,
            baseline=lambda: _measure_baseline(ctx, say),
        )  # fmt: skip
        with trial_slot_lock(spec, store, name):  # no live worker is between ask and its tag
            recovered = recover_interrupted(study, store, foreign=reclaim)
        left = max(limit - counted_trials(study), 0)
        helpers = min(workers - 1, max(left - 1, 0))
        if helpers and not early:  # resumed or joined: as many as useful
            share_checks(ctx.run_dir / LOG_DIR)
            children = spawn_workers(helpers, ctx.run_dir, spec, name)
        with _Progress(left, ctx, progress, len(finished_trials(study))) as bar:
            _loop(ctx, study, store, spec, name, callbacks=[bar])
    except BaseException:
        stop_workers(children)
        raise
    finally:
        share_checks(None)
    wait_workers(children)
    directions = objective_directions(config.search)
    best = best_trials(study.get_trials(deepcopy=False), directions)
    return SearchResult(
        ctx, study, study.user_attrs["baseline"], best, time.perf_counter() - start, recovered,
        spec,
    )  # fmt: skip


def _spawned_folders(run_dir: Path) -> list[Path]:
    """The folders starting workers will make: the run directory when it is missing, and
    its ``workers`` folder."""
    return [f for f in (run_dir, run_dir / LOG_DIR) if not f.exists()]


def _remove_spawned(made: list[Path]) -> None:
    """Remove the worker logs' folder and, when it holds nothing else, the run directory:
    what starting the workers made (:func:`_spawned_folders`)."""
    import shutil

    for folder in reversed(made):
        if folder.name == LOG_DIR:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _target(ctx: SearchContext, attrs: dict | None) -> int:
    """The trial target: the config's (after --n-trials), or, when that is the n_trials the
    study was made with, the study's current one (a resume keeps an earlier --n-trials)."""
    limit = _limit(ctx)
    if not attrs or not isinstance(attrs.get(N_TRIALS_ATTR), int):
        return limit
    made_with = (attrs.get("config") or {}).get("search", {}).get("strategy", {}).get("n_trials")
    if made_with == ctx.config.search.strategy.n_trials:
        return attrs[N_TRIALS_ATTR]
    return limit


def _restart(run_dir: Path, spec: str, name: str, *, own_journal: bool) -> Path | None:
    return restart(Path(run_dir), spec, name, own_journal=own_journal)


def _measure_baseline(ctx: SearchContext, say: Callable[[str], None]) -> dict:
    say("measuring the fp32 baseline on the validation split")
    baseline = ctx.baseline()
    named = ctx.config.search.metrics
    scores = ", ".join(
        f"{name} {v:.4g}" for name, v in baseline.items() if name in named and name != "size"
    )
    say(f"fp32 baseline: {scores}, {int(baseline['size']):,} bytes")
    return baseline


def run_worker(run_dir: Path, storage: str, study_name: str, index: int) -> int:
    """A worker process of ``--workers``: join the study and run trials (no outputs).

    The config comes from the study itself, so every worker searches the same space, up to
    the study's current target (``n_trials`` of the run that started it).

    Returns:
        How many trials this worker finished.
    """
    from onnxopt.config.base import validate

    share_checks(Path(run_dir) / LOG_DIR)
    warm_up()
    stored = _wait_for_study(storage, study_name)
    attrs = stored.user_attrs
    config = validate(SearchConfig, attrs["config"], source=storage)
    ctx = SearchContext.prepare(config, run_dir, expected_sha256=attrs.get("base_sha256"))
    limit = attrs.get(N_TRIALS_ATTR, _limit(ctx))
    study, store = open_search(
        ctx, storage, study_name, join=True, limit=limit, seed_offset=index, set_target=False
    )
    return _loop(ctx, study, store, storage, study_name, limit=limit, index=index)


STUDY_WAIT_S = 3600.0
"""How long a worker waits for the process that started it to make the study."""
STUDY_POLL_S = 0.05
STUDY_POLL_FAST_S = 10.0
"""A worker looks for the study every :data:`STUDY_POLL_S` seconds for this long (a search
that loads a model and measures its baseline), then less and less often (one that trains)."""


def _wait_for_study(storage: str, name: str) -> optuna.Study:
    """The study, once the process that started this worker has stored its baseline (the
    worker starts while that process measures it); poll, and give up when that process is
    gone or after :data:`STUDY_WAIT_S`."""
    started = time.monotonic()
    parent, deadline = os.getppid(), started + STUDY_WAIT_S
    pause = STUDY_POLL_S
    while True:
        try:
            study = load_study(storage, name)
            if {"baseline", N_TRIALS_ATTR} <= set(study.user_attrs):  # both set when made
                return study
        except UsageError:  # no journal or no study yet
            pass
        if os.getppid() != parent or time.monotonic() > deadline:
            raise OnnxoptError(
                f"the study {name!r} was not made (the search that started this worker "
                "stopped first); see the search's own output"
            )
        if time.monotonic() - started > STUDY_POLL_FAST_S:  # a long training: a database
            pause = min(pause * 1.5, 1.0)  # is asked once a second
        time.sleep(pause)


def export_best(
    result: SearchResult, *, ort_format: bool = True, say: Callable[[str], None] = _quiet
) -> list[ExportedTrial]:
    """Rebuild and write every best trial into ``run_dir/pareto``.

    The files are written into a temporary folder that then replaces ``pareto/`` whole: the
    folder holds exactly the current best set (no file of an earlier, larger set stays
    behind), and a kill during the export leaves the previous folder as it was.
    """
    ctx = result.context
    test = ctx.test_measurer()
    folder = ctx.run_dir / "pareto"
    sweep_stale(ctx.run_dir)
    plan = ctx.evaluator.plan
    exported = []
    if result.best:
        say("measuring the fp32 base model on the test split (what the exports compare with)")
        base = test.measure(ctx.builder.base, latency=plan)
        result.fp32_test = {
            "metrics": dict(base.metrics),
            "latency_ms": base.latency.to_dict() if base.latency else {},
        }
    with atomic_folder(folder) as staging:
        for i, t in enumerate(result.best, start=1):
            say(f"exporting trial {t.number} ({i}/{len(result.best)}): .onnx, .ort, card; "
                "measuring on the test split")  # fmt: skip
            exported.append(export_trial(
                t, ctx.space, ctx.builder, test, staging, latency=plan, ort_format=ort_format,
                export=ctx.config.search.export, preprocessing=ctx.dataset.preprocessing,
                final_folder=folder,
            ))  # fmt: skip
    result.exported = exported
    return result.exported


def remeasure_best(result: SearchResult, say: Callable[[str], None] = _quiet) -> None:
    """Time the best trials and the points within their noise again, interleaved with the
    fp32 model, and recompute the best set on those figures (:mod:`.final_latency`);
    ``[search.evaluation] remeasure_rounds = 0`` turns it off."""
    ctx = result.context
    rounds = ctx.config.search.evaluation.remeasure_rounds
    if rounds == 0 or not result.best:
        return
    space, builder = ctx.space, ctx.builder
    best, info = remeasure_front(
        result.study.get_trials(deepcopy=False), result.best, search=ctx.config.search,
        build=lambda t: builder.build(space, space.decode(t.params)).model, base=builder.base,
        measurer=ctx.evaluator.measurer, max_rounds=rounds,
        lock=FileLock(ctx.run_dir / LATENCY_LOCK), say=say,
    )  # fmt: skip
    if info.front_after != info.front_before:
        say(f"best set on the interleaved figures: trials {info.front_after} "
            f"(was {info.front_before})")  # fmt: skip
    result.best, result.remeasured = best, info
    # the trials' values stay what the search measured (Optuna's best_trials, the dashboard);
    # the exported set and its figures are kept with the study for status
    result.study.set_user_attr("remeasured", {
        k: v for k, v in info.as_dict().items() if k in ("front_before", "front_after", "ties")
    })  # fmt: skip


def write_remeasured(result: SearchResult) -> Path | None:
    """Write the interleaved figures to ``latency.json`` and into ``manifest.json`` (beside
    the CPU integer path, threads and load average it records)."""
    if result.remeasured is None:
        return None
    folder = result.context.run_dir
    data = result.remeasured.as_dict()
    manifest = folder / "manifest.json"
    if manifest.is_file():
        merged = json.loads(manifest.read_text(encoding="utf-8"))
        merged["latency_remeasured"] = data
        write_text(manifest, json.dumps(merged, indent=2))
    return write_text(folder / "latency.json", json.dumps(data, indent=2) + "\n")


def exports_on_disk(result: SearchResult) -> list[ExportedTrial]:
    """``--no-export``: the best trials' exports that an earlier run left in ``pareto/`` (so
    report.json keeps describing the files on disk)."""
    from onnxopt.optimizer.search.export import read_exported

    folder = result.context.run_dir / "pareto"
    found = (read_exported(folder, t) for t in result.best)
    result.exported = [e for e in found if e is not None]
    return result.exported


class _Progress:
    """A tqdm bar of the study's finished trials (all workers') and the best values so far.

    ``start`` is the number of trials finished before this run began.
    """

    def __init__(self, total: int, ctx: SearchContext, enabled: bool, start: int = 0) -> None:
        from tqdm.auto import tqdm

        self.search = ctx.config.search
        self.bar = tqdm(total=total, desc="search", unit="trial", disable=not enabled or None)
        self.best: dict[str, float] = {}
        self.start = start

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.bar.n = min(len(finished_trials(study)) - self.start, self.bar.total)
        if trial.state is TrialState.COMPLETE and is_feasible(trial):
            for m, value in trial.user_attrs["metrics"].items():
                if m not in self.search.metrics or not math.isfinite(value):
                    continue
                better = max if self.search.direction(m) == "maximize" else min
                self.best[m] = better(self.best.get(m, value), value)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in self.best.items()}, refresh=False)
        self.bar.refresh()
