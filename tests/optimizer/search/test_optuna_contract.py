"""The Optuna behaviour onnxopt's trial loop relies on, pinned to the supported range."""

from __future__ import annotations

import re
import tomllib
import warnings
from pathlib import Path

import optuna
import pytest
from packaging.version import Version

from onnxopt.samplers import SAMPLERS, SpaceShape, make_sampler, population_size

ROOT = Path(__file__).resolve().parents[3]


def test_installed_optuna_is_in_the_declared_range():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (spec,) = [d for d in deps if re.match(r"optuna[<>=]", d)]
    low, high = re.match(r"optuna>=([\d.]+),<([\d.]+)", spec).groups()
    assert Version(low) <= Version(optuna.__version__) < Version(high)


def _half_sampled_trial_then_more(sampler) -> optuna.Study:
    """A study in which a kill interrupted a trial after one of its two params was sampled
    (it was failed as interrupted), then the ask/tell loop runs the four points."""
    study = optuna.create_study(sampler=sampler)
    half = study.ask()
    half.suggest_categorical("a", [1, 2])
    half.set_user_attr("interrupted", True)
    study.tell(half, state=optuna.trial.TrialState.FAIL)
    for _ in range(4):
        trial = study.ask()
        study.tell(trial, trial.suggest_categorical("a", [1, 2])
                   + trial.suggest_categorical("b", [10, 20]))  # fmt: skip
    return study


def test_optunas_brute_force_cannot_take_a_half_sampled_trial_which_ours_can():
    """Optuna's BruteForceSampler builds its grid from every trial's params, so a trial a kill
    interrupted mid-sampling breaks it for good; it also stops the study itself, which works
    only inside Study.optimize. onnxopt's brute force knows the space and skips such trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    class NoStop(optuna.samplers.BruteForceSampler):  # its grid, without the Study.stop() call
        def after_trial(self, study, trial, state, values) -> None:
            return None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        theirs = NoStop(seed=0)
    with pytest.raises(ValueError, match="param_name mismatch"):
        _half_sampled_trial_then_more(theirs)
    shape = SpaceShape({"a": (1, 2), "b": (10, 20)}, n_trials=4)
    study = _half_sampled_trial_then_more(make_sampler("brute-force", 0, shape))
    done = [t for t in study.trials if t.state is optuna.trial.TrialState.COMPLETE]
    assert sorted((t.params["a"], t.params["b"]) for t in done) == [
        (1, 10), (1, 20), (2, 10), (2, 20)]  # every point once  # fmt: skip


def test_every_registered_sampler_builds_and_samples_a_point():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, spec in SAMPLERS.items():
        a_choices = (0, 1, 2, 3) if spec.ordinal else (1, 2, 3)
        shape = SpaceShape({"a": a_choices, "b": (0, 1, 2, 3)}, n_trials=3)
        study = optuna.create_study(sampler=make_sampler(name, 0, shape), directions=["maximize"])
        for _ in range(3):
            trial = study.ask()
            a = trial.suggest_int("a", 0, 3) if spec.ordinal else trial.suggest_categorical(
                "a", [1, 2, 3])  # fmt: skip
            b = trial.suggest_int("b", 0, 3) if spec.ordinal else trial.suggest_categorical(
                "b", [0, 1, 2, 3])  # fmt: skip
            study.tell(trial, float(a + b))
        assert len(study.trials) == 3, name


def test_genetic_populations_are_sized_to_the_space():
    assert population_size(SpaceShape({"a": tuple(range(12))}, 30)) == 10  # the floor
    joint = SpaceShape({f"d{i}": (0, 1) for i in range(9)}, n_trials=200)  # 512 points
    assert population_size(joint) == 23  # about sqrt(512): the first generation spreads
    assert population_size(SpaceShape({"a": tuple(range(10**6))}, 200)) == 40  # 5 generations


def test_the_storage_api_the_loop_uses_is_public():
    for method in ("get_trial_id_from_study_id_trial_number", "set_trial_user_attr",
                   "set_trial_state_values", "get_study_id_from_name"):  # fmt: skip
        assert hasattr(optuna.storages.BaseStorage, method)
        assert not method.startswith("_")
    lock = optuna.storages.journal.JournalFileOpenLock
    assert callable(lock.acquire) and callable(lock.release)
