"""The sampler registry: the one place sampler names, their needs and their factories live.

Config validation, the search space (which samplers see choices as ordinal indices) and the
study read :data:`SAMPLERS`. Factories import Optuna only when called, so a config loads
without it.

Constraints reach the samplers through ``trial.set_constraint`` (Optuna 5): TPE, NSGA-II/III
and GP steer away from infeasible trials; for every sampler feasibility is also enforced
when the best trials are chosen (:mod:`onnxopt.optimizer.search.pareto`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler.

    Attributes:
        name: The config name (``strategy.sampler``).
        description: One line for docs and reports.
        ordinal: The sampler models numbers: every dimension is offered as the index into
            its sorted numeric choices, and non-numeric choices are refused.
        min_dimensions: The fewest open choices it works with.
        build: ``build(seed)`` -> the Optuna sampler.
    """

    name: str
    description: str
    build: Callable[[int], Any]
    ordinal: bool = False
    min_dimensions: int = 1


def _brute_force(seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    class LoopStoppedBruteForce(optuna.samplers.BruteForceSampler):
        """BruteForceSampler that leaves stopping to onnxopt's trial loop.

        Its ``after_trial`` only calls ``Study.stop()`` once the grid is exhausted, which
        Optuna allows only inside ``Study.optimize``; onnxopt's ask/tell loop caps the trials
        at the number of points itself (a contract test pins this).
        """

        def after_trial(self, study, trial, state, values) -> None:  # noqa: D102
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return LoopStoppedBruteForce(seed=seed)


def _optuna(cls: str, **kwargs: Any) -> Callable[[int], Any]:
    def build(seed: int) -> Any:
        import optuna

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return getattr(optuna.samplers, cls)(seed=seed, **kwargs)

    return build


SAMPLERS: Mapping[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec("brute-force", "every point once, in random order", _brute_force),
        SamplerSpec("random", "independent uniform sampling", _optuna("RandomSampler")),
        SamplerSpec("tpe", "tree-structured Parzen estimator",
                    _optuna("TPESampler", n_startup_trials=5)),
        SamplerSpec("nsgaii", "NSGA-II genetic algorithm (multi-objective)",
                    _optuna("NSGAIISampler", population_size=10)),
        SamplerSpec("nsgaiii", "NSGA-III genetic algorithm (many objectives)",
                    _optuna("NSGAIIISampler", population_size=10)),
        SamplerSpec("qmc", "quasi-Monte Carlo (Sobol) sampling",
                    _optuna("QMCSampler", warn_independent_sampling=False)),
        SamplerSpec("gp", "Gaussian-process Bayesian optimization",
                    _optuna("GPSampler", n_startup_trials=5), ordinal=True),
        SamplerSpec("cmaes", "CMA evolution strategy",
                    _optuna("CmaEsSampler", n_startup_trials=5), ordinal=True,
                    min_dimensions=2),
    )
}  # fmt: skip
"""Every sampler by config name."""


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (a name the config already validated)."""
    return SAMPLERS[name].build(seed)
