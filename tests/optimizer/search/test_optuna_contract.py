"""The Optuna behaviour onnxopt's trial loop relies on, pinned to the supported range."""

from __future__ import annotations

import inspect
import re
import tomllib
from pathlib import Path

import optuna
from packaging.version import Version

from onnxopt.samplers import SAMPLERS, make_sampler

ROOT = Path(__file__).resolve().parents[3]


def test_installed_optuna_is_in_the_declared_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"optuna[<>=]", d)]
    low, high = re.match(r"optuna>=([\d.]+),<([\d.]+)", spec).groups()
    assert Version(low) <= Version(optuna.__version__) < Version(high)


def test_optunas_brute_force_stops_the_study_itself_which_the_loop_replaces():
    """Optuna's BruteForceSampler calls Study.stop() once the grid is done, which only works
    inside Study.optimize; onnxopt's sampler keeps everything else and leaves stopping to its
    loop (which caps the trials at the number of points)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.BruteForceSampler(seed=0))
    study.optimize(lambda t: t.suggest_categorical("a", [1, 2]), n_trials=10)
    assert len(study.trials) == 2  # Optuna stopped it
    ours = make_sampler("brute-force", 0)
    assert isinstance(ours, optuna.samplers.BruteForceSampler)
    base = inspect.signature(optuna.samplers.BruteForceSampler.after_trial)
    assert list(inspect.signature(type(ours).after_trial).parameters) == list(base.parameters)
    overridden = {
        name for name, value in vars(type(ours)).items()
        if callable(value) and not name.startswith("__")
    }  # fmt: skip
    assert overridden == {"after_trial"}
    study = optuna.create_study(sampler=ours)
    for _ in range(2):  # the ask/tell loop: no stop() outside optimize, every point once
        trial = study.ask()
        study.tell(trial, trial.suggest_categorical("a", [1, 2]))
    assert sorted(t.params["a"] for t in study.trials) == [1, 2]


def test_every_registered_sampler_builds_and_samples_a_point():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, spec in SAMPLERS.items():
        study = optuna.create_study(sampler=make_sampler(name, 0), directions=["maximize"])
        for _ in range(3):
            trial = study.ask()
            a = trial.suggest_int("a", 0, 3) if spec.ordinal else trial.suggest_categorical(
                "a", [1, 2, 3])  # fmt: skip
            b = trial.suggest_int("b", 0, 3)
            study.tell(trial, float(a + b))
        assert len(study.trials) == 3, name


def test_the_storage_api_the_loop_uses_is_public():
    for method in ("get_trial_id_from_study_id_trial_number", "set_trial_user_attr",
                   "set_trial_state_values", "get_study_id_from_name"):  # fmt: skip
        assert hasattr(optuna.storages.BaseStorage, method)
        assert not method.startswith("_")
    lock = optuna.storages.journal.JournalFileOpenLock
    assert callable(lock.acquire) and callable(lock.release)
