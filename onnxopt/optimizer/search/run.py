"""Run a search end to end: prepare the context, open the study, optimize, pick the best.

>>> result = run_search(load_search_config(path), run_dir=Path("runs/x"))  # doctest: +SKIP
>>> result.best  # feasible Pareto set (or the best trial), exported with export_best
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from onnxopt.config.search import SearchConfig
from onnxopt.data.dataset import Dataset
from onnxopt.errors import UsageError
from onnxopt.optimizer.search.base import load_base, load_data
from onnxopt.optimizer.search.candidate import CandidateBuilder
from onnxopt.optimizer.search.export import ExportedTrial, export_trial
from onnxopt.optimizer.search.measure import Evaluator
from onnxopt.optimizer.search.objective import (
    CandidateFailed,
    Objective,
    objective_directions,
    objective_names,
)
from onnxopt.optimizer.search.pareto import best_trials, is_feasible
from onnxopt.optimizer.search.samplers import make_sampler
from onnxopt.optimizer.search.space import SearchSpace
from onnxopt.optimizer.search.study import (
    finished_count,
    open_study,
    recover_interrupted,
    storage_url,
)


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
    def prepare(cls, config: SearchConfig, run_dir: Path) -> SearchContext:
        """Load data and base model and build the space (config errors surface here)."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        dataset = load_data(config)
        base = load_base(config, dataset, run_dir)
        builder = CandidateBuilder(base, dataset, config.search.width)
        space = SearchSpace.build(config.search, builder.width_space())
        s = config.search
        evaluator = Evaluator(dataset.val, dataset.num_classes, s.evaluation, s.constraints)
        return cls(config, run_dir, dataset, builder, space, evaluator)

    def test_evaluator(self) -> Evaluator:
        """An evaluator on the test split (for exported models only)."""
        s = self.config.search
        return Evaluator(self.dataset.test, self.dataset.num_classes, s.evaluation, s.constraints)

    def baseline(self) -> dict:
        """fp32 base model metrics on the validation split (latency included)."""
        return self.evaluator.measure(self.builder.base).metrics


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


def _start_study(ctx: SearchContext, url: str, resume: bool) -> tuple[optuna.Study, int]:
    s = ctx.config.search
    sampler = make_sampler(s.strategy.sampler, s.strategy.seed)
    study = open_study(url, objective_directions(s), sampler, resume=resume)
    fingerprint = ctx.dataset.fingerprint()
    if resume:
        if study.user_attrs.get("data_fingerprint") != fingerprint:
            raise UsageError("the data differ from the stored study's; resume on the same data")
        return study, recover_interrupted(study)
    study.set_user_attr("config", ctx.config.model_dump(mode="json"))
    study.set_user_attr("space", ctx.space.as_dict())
    study.set_user_attr("data_fingerprint", fingerprint)
    study.set_user_attr("objectives", objective_names(s))
    study.set_user_attr("baseline", ctx.baseline())
    return study, 0


def run_search(
    config: SearchConfig,
    *,
    run_dir: Path,
    storage: str | None = None,
    resume: bool = False,
    progress: bool = True,
) -> SearchResult:
    """Run (or resume) the search of ``config`` until n_trials have finished.

    Args:
        config: The search config.
        run_dir: Where ``study.db``, the base model and outputs go.
        storage: Any Optuna storage URL instead of ``run_dir/study.db``.
        resume: Continue the stored study (trials a kill interrupted are re-run).
        progress: Show a progress bar with the best values so far.

    Raises:
        ConfigError, UsageError: Before any trial runs, for a config or storage problem.
    """
    start = time.perf_counter()
    ctx = SearchContext.prepare(config, run_dir)
    url = storage_url(run_dir, storage)
    study, recovered = _start_study(ctx, url, resume)
    ctx.evaluator.baseline_accuracy = study.user_attrs["baseline"]["accuracy"]
    strategy = config.search.strategy
    remaining = max(strategy.n_trials - finished_count(study), 0)
    if remaining:
        with _Progress(remaining, ctx, progress) as bar:
            study.optimize(
                Objective(ctx.space, ctx.builder, ctx.evaluator), n_trials=remaining,
                timeout=strategy.timeout, catch=(CandidateFailed,), callbacks=[bar],
            )  # fmt: skip
    directions = objective_directions(config.search)
    best = best_trials(study.get_trials(deepcopy=False), directions)
    return SearchResult(
        ctx, study, study.user_attrs["baseline"], best, time.perf_counter() - start, recovered, url
    )


def export_best(result: SearchResult, *, ort_format: bool = True) -> list[ExportedTrial]:
    """Rebuild and write every best trial into ``run_dir/pareto``."""
    ctx = result.context
    test = ctx.test_evaluator()
    folder = ctx.run_dir / "pareto"
    result.exported = [
        export_trial(t, ctx.space, ctx.builder, test, folder, ort_format=ort_format)
        for t in result.best
    ]
    return result.exported


class _Progress:
    """A tqdm bar updated after every trial with the best feasible values so far."""

    def __init__(self, total: int, ctx: SearchContext, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.search = ctx.config.search
        self.bar = tqdm(total=total, desc="search", unit="trial", disable=not enabled or None)
        self.best: dict[str, float] = {}

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.bar.update(1)
        if trial.state is TrialState.COMPLETE and is_feasible(trial):
            for m, value in trial.user_attrs["metrics"].items():
                if m not in self.search.metrics or not math.isfinite(value):
                    continue
                better = max if self.search.direction(m) == "maximize" else min
                self.best[m] = better(self.best.get(m, value), value)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in self.best.items()}, refresh=False)
