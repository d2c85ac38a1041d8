"""The sampler registry: the one place sampler names, their needs and their factories live.

Config validation, the search space (which samplers see choices as ordinal indices) and the
study read :data:`SAMPLERS`. Factories import Optuna only when called, so a config loads
without it.

Constraints reach the samplers through ``trial.set_constraint`` (Optuna 5): TPE, NSGA-II/III
and GP steer away from infeasible trials; for every sampler feasibility is also enforced
when the best trials are chosen (:mod:`onnxopt.optimizer.search.pareto`).
"""

from __future__ import annotations

import math
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
        build: ``build(seed, shape)`` -> the Optuna sampler (``shape``: the space, or None).
        needs_space: ``build`` needs the space's shape.
    """

    name: str
    description: str
    build: Callable[..., Any]
    ordinal: bool = False
    min_dimensions: int = 1
    needs_space: bool = False


@dataclass(frozen=True)
class SpaceShape:
    """What a sampler may be sized to: the open dimensions and the trial budget.

    Attributes:
        dimensions: Parameter name -> its choices, as the trials suggest them.
        n_trials: The trials the search will run.
    """

    dimensions: Mapping[str, tuple[Any, ...]]
    n_trials: int

    @property
    def size(self) -> int:
        """Points in the space."""
        return math.prod(len(c) for c in self.dimensions.values())


def population_size(shape: SpaceShape) -> int:
    """A genetic population sized to the space and the budget: about the square root of the
    number of points (so the first generation spreads over the space), at least 10, and small
    enough for five generations in the budget."""
    wanted = max(10, math.isqrt(max(shape.size - 1, 0)) + 1)
    return max(10, min(wanted, shape.n_trials // 5))


def _exhaustive(seed: int, shape: SpaceShape) -> optuna.samplers.BaseSampler:
    from onnxopt.exhaustive import ExhaustiveSampler

    return ExhaustiveSampler(shape.dimensions, seed=seed)


def _optuna(cls: str, population: bool = False, **kwargs: Any) -> Callable[..., Any]:
    def build(seed: int, shape: SpaceShape | None = None) -> Any:
        import optuna

        extra = dict(kwargs)
        if population:
            extra["population_size"] = population_size(shape) if shape is not None else 10
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return getattr(optuna.samplers, cls)(seed=seed, **extra)

    return build


SAMPLERS: Mapping[str, SamplerSpec] = {
    spec.name: spec
    for spec in (
        SamplerSpec("brute-force", "every point once, in random order", _exhaustive,
                    needs_space=True),
        SamplerSpec("random", "independent uniform sampling", _optuna("RandomSampler")),
        SamplerSpec("tpe", "tree-structured Parzen estimator",
                    _optuna("TPESampler", n_startup_trials=5)),
        SamplerSpec("nsgaii", "NSGA-II genetic algorithm (multi-objective)",
                    _optuna("NSGAIISampler", population=True)),
        SamplerSpec("nsgaiii", "NSGA-III genetic algorithm (many objectives)",
                    _optuna("NSGAIIISampler", population=True)),
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


def make_sampler(
    name: str, seed: int, shape: SpaceShape | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (a name the config already validated), sized to ``shape``
    where it has a size (genetic populations) or needs the space (brute force)."""
    spec = SAMPLERS[name]
    if spec.needs_space and shape is None:
        raise ValueError(f"sampler {name!r} needs the search space")
    return spec.build(seed, shape)
