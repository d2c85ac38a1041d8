"""Run a search end to end: prepare the context, open the study, optimize, pick the best.

>>> result = run_search(load_search_config(path), run_dir=Path("runs/x"))  # doctest: +SKIP
>>> result.best  # feasible Pareto set (or the best trial), exported with export_best
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from onnxopt.config.search import SearchConfig
from onnxopt.data.dataset import Dataset
from onnxopt.errors import UsageError
from onnxopt.optimizer.evaluate.measure import Measurer
from onnxopt.optimizer.search.base import load_base, load_data, prepare_run_dir
from onnxopt.optimizer.search.candidate import CandidateBuilder, model_hash
from onnxopt.optimizer.search.export import ExportedTrial, export_trial
from onnxopt.optimizer.search.locks import LATENCY_LOCK, FileLock, trial_slot_lock
from onnxopt.optimizer.search.measure import Evaluator
from onnxopt.optimizer.search.objective import (
    Objective,
    objective_directions,
    objective_names,
)
from onnxopt.optimizer.search.parallel import spawn_workers, stop_workers, wait_workers
from onnxopt.optimizer.search.pareto import best_trials, is_feasible
from onnxopt.optimizer.search.space import SearchSpace
from onnxopt.optimizer.search.study import (
    STUDY_NAME,
    counted_trials,
    finished_trials,
    load_study,
    open_storage,
    open_study,
    recover_interrupted,
    storage_spec,
    study_exists,
)
from onnxopt.optimizer.search.worker import TrialLoop
from onnxopt.samplers import make_sampler


def _quiet(_: str) -> None:
    """Discards notes (library callers that do not print)."""


@dataclass
class SearchContext:
    """Everything trials share: data, base model, candidate builder, space, evaluator."""

    config: SearchConfig
    run_dir: Path
    dataset: Dataset
    builder: CandidateBuilder
    space: SearchSpace
    evaluator: Evaluator

    @classmethod
    def prepare(
        cls, config: SearchConfig, run_dir: Path, notify: Callable[[str], None] = _quiet
    ) -> SearchContext:
        """Load data and base model and build the space (config errors surface here).

        Args:
            config: The search config.
            run_dir: The run directory.
            notify: Receives one line per change made to the user's model.
        """
        source = config.model.onnx
        model_bytes = source.stat().st_size if source is not None and source.is_file() else 0
        run_dir = prepare_run_dir(run_dir, model_bytes)
        dataset = load_data(config)
        base, notes = load_base(config, dataset, run_dir)
        for note in notes:
            notify(note)
        fixed = config.model.fixed_values()
        builder = CandidateBuilder(base, dataset, config.search.width, fixed)
        space = SearchSpace.build(config.search, builder.width_space())
        space.check_points(config.search.strategy.enqueue)
        s = config.search
        measurer = search_measurer(config, dataset.val, dataset.num_classes)
        evaluator = Evaluator(measurer, s.evaluation, s.constraints)
        return cls(config, run_dir, dataset, builder, space, evaluator)

    def test_measurer(self) -> Measurer:
        """A measurer on the test split with the fp32 base model's outputs there as the
        reference (exported files only)."""
        measurer = search_measurer(self.config, self.dataset.test, self.dataset.num_classes)
        return measurer.with_reference(measurer.outputs(measurer.load(self.builder.base)))

    def base_sha256(self) -> str:
        """SHA-256 of the serialized base model (workers check they search the same one)."""
        return model_hash(self.builder.base.SerializeToString())

    def reference(self):
        """The fp32 base model's scored outputs on the validation split (fidelity metrics
        compare every candidate with them)."""
        return self.evaluator.reference_outputs(self.builder.base)

    def baseline(self) -> dict:
        """fp32 base model metrics on the validation split (latency included; fidelity
        metrics against its own outputs: cosine 1, error 0)."""
        evaluator = self.evaluator.for_trials({}, self.reference())
        return evaluator.measure(self.builder.base).metrics


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

    @property
    def objectives(self) -> list[str]:
        return objective_names(self.context.config.search)


def search_measurer(config: SearchConfig, split, num_classes: int | None) -> Measurer:
    """The measurement pipeline a search's config asks for, on one split."""
    from onnxopt.metrics import user_metrics

    s = config.search
    requested = [*s.metrics, *s.constraints.max_metric_drop]
    params = {name: {"k": m.k} for name, m in s.metrics.items() if m.k is not None}
    fixed = config.model.fixed_values()
    return Measurer(
        split, task=config.model.task, metrics=requested, user_metrics=user_metrics(s.metrics),
        num_classes=num_classes, output_name=config.model.output, fixed_inputs=fixed,
        runtime=s.evaluation.runtime, threads=s.evaluation.threads, metric_params=params,
    )  # fmt: skip


def _open(ctx: SearchContext, spec: str, name: str, *, join: bool, seed_offset: int = 0):
    """Open (or join) the study; store the config, space and baseline when creating it."""
    s = ctx.config.search
    storage = open_storage(spec)
    # measured before the study exists: a model or data problem leaves no half-made study
    baseline = None if study_exists(storage, name) else ctx.baseline()
    sampler = make_sampler(s.strategy.sampler, s.strategy.seed + seed_offset)
    # One worker at a time: the first to get here creates the study, stores its attrs and
    # enqueues the fixed points; the others wait, then check they search the same thing.
    with trial_slot_lock(spec, storage, name):
        study, created = open_study(storage, name, objective_directions(s), sampler, join=join)
        if created or "baseline" not in study.user_attrs:
            study.set_user_attr("config", ctx.config.model_dump(mode="json"))
            study.set_user_attr("space", ctx.space.as_dict())
            study.set_user_attr("data_fingerprint", ctx.dataset.fingerprint())
            study.set_user_attr("base_sha256", ctx.base_sha256())
            study.set_user_attr("objectives", objective_names(s))
            for point in s.strategy.enqueue:
                study.enqueue_trial(ctx.space.encode(point), skip_if_exists=True)
            study.set_user_attr("baseline", baseline or ctx.baseline())  # last: marks it done
        else:
            _check_same_search(study, ctx)
    return study, storage


def _check_same_search(study: optuna.Study, ctx: SearchContext) -> None:
    if study.user_attrs.get("data_fingerprint") != ctx.dataset.fingerprint():
        raise UsageError("the data differ from the stored study's; use the same data files")
    if study.user_attrs.get("space") != json.loads(json.dumps(ctx.space.as_dict())):
        raise UsageError("the config's search space differs from the stored study's")
    stored = study.user_attrs.get("base_sha256")
    if stored is not None and stored != ctx.base_sha256():
        raise UsageError(
            f"the base model differs from the stored study's (sha256 {stored[:12]}...); give "
            "every worker the same model file (an ONNX file, rather than a recipe trained on "
            "each machine)"
        )


def _limit(ctx: SearchContext) -> int:
    """n_trials, or the number of points when brute force visits each once."""
    strategy = ctx.config.search.strategy
    if strategy.sampler == "brute-force":
        return min(strategy.n_trials, ctx.space.size)
    return strategy.n_trials


def _loop(ctx: SearchContext, study, storage, spec: str, name: str, callbacks=()) -> int:
    evaluator = ctx.evaluator.for_trials(
        study.user_attrs["baseline"], ctx.reference(), FileLock(ctx.run_dir / LATENCY_LOCK)
    )
    objective = Objective(ctx.space, ctx.builder, evaluator)
    loop = TrialLoop(
        study, storage, objective, _limit(ctx), slot_lock=trial_slot_lock(spec, storage, name),
        timeout=ctx.config.search.strategy.timeout, callbacks=callbacks,
    )  # fmt: skip
    if ctx.config.search.strategy.workers == 1:
        return loop.run()
    from threadpoolctl import threadpool_limits

    # several workers share the cores: one BLAS thread each for refits and calibration
    with threadpool_limits(limits=1):
        return loop.run()


def run_search(
    config: SearchConfig,
    *,
    run_dir: Path,
    storage: str | None = None,
    study_name: str | None = None,
    resume: bool = False,
    reclaim: bool = False,
    progress: bool = True,
    notify: Callable[[str], None] = _quiet,
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
        progress: Show a progress bar with the best values so far.
        notify: Receives one line per change made to the user's model.

    Raises:
        ConfigError, UsageError: Before any trial runs, for a config or storage problem.
        OnnxoptError: When a worker process fails.
    """
    start = time.perf_counter()
    ctx = SearchContext.prepare(config, run_dir, notify)
    spec = storage_spec(run_dir, storage)
    name = study_name or STUDY_NAME
    study, store = _open(ctx, spec, name, join=resume or study_name is not None)
    with trial_slot_lock(spec, store, name):  # no live worker is between ask and its tag
        recovered = recover_interrupted(study, store, foreign=reclaim)
    children = spawn_workers(config.search.strategy.workers - 1, ctx.run_dir, spec, name)
    try:
        total = max(_limit(ctx) - counted_trials(study), 0)
        with _Progress(total, ctx, progress, len(finished_trials(study))) as bar:
            _loop(ctx, study, store, spec, name, callbacks=[bar])
    except BaseException:
        stop_workers(children)
        raise
    wait_workers(children)
    directions = objective_directions(config.search)
    best = best_trials(study.get_trials(deepcopy=False), directions)
    return SearchResult(
        ctx, study, study.user_attrs["baseline"], best, time.perf_counter() - start, recovered,
        spec,
    )  # fmt: skip


def run_worker(run_dir: Path, storage: str, study_name: str, index: int) -> int:
    """A worker process of ``--workers``: join the study and run trials (no outputs).

    The config comes from the study itself, so every worker searches the same space.

    Returns:
        How many trials this worker finished.
    """
    from onnxopt.config.base import validate

    stored = load_study(storage, study_name)
    config = validate(SearchConfig, stored.user_attrs["config"], source=storage)
    ctx = SearchContext.prepare(config, run_dir)
    study, store = _open(ctx, storage, study_name, join=True, seed_offset=index)
    return _loop(ctx, study, store, storage, study_name)


def export_best(result: SearchResult, *, ort_format: bool = True) -> list[ExportedTrial]:
    """Rebuild and write every best trial into ``run_dir/pareto``."""
    ctx = result.context
    test = ctx.test_measurer()
    folder = ctx.run_dir / "pareto"
    plan = ctx.evaluator.plan
    result.exported = [
        export_trial(
            t, ctx.space, ctx.builder, test, folder, latency=plan, ort_format=ort_format,
            export=ctx.config.search.export, preprocessing=ctx.dataset.preprocessing,
        )  # fmt: skip
        for t in result.best
    ]
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
