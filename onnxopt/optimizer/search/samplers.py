"""The sampler registry: one typed mapping from config name to an Optuna sampler factory.

Constraints reach the samplers through ``trial.set_constraint`` (Optuna 5), so the ones that
handle constraints (TPE, NSGA-II/III, GP) steer away from infeasible trials; for every
sampler feasibility is also enforced when the best trials are chosen (:mod:`.pareto`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import optuna

SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]

SAMPLER_FACTORIES: Mapping[str, SamplerFactory] = {
    "brute-force": lambda seed: optuna.samplers.BruteForceSampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
    "nsgaii": lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=10),
    "nsgaiii": lambda seed: optuna.samplers.NSGAIIISampler(seed=seed, population_size=10),
    "qmc": lambda seed: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=5),
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=5),
}


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler called ``name`` (a name the config already validated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLER_FACTORIES[name](seed)
