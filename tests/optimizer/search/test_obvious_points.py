"""The obvious points first: the default 8-bit point and the narrowest point are enqueued
before the sampler's own, within the budget, and a config key turns them off."""

from __future__ import annotations

from optuna.trial import TrialState

from onnxopt.config.search import Search, load_search_config
from onnxopt.optimizer.search.run import run_search
from onnxopt.optimizer.search.space import SearchSpace

SPACE = """
[search.quantization.by_type.linear]
data_in_width = [4, 6, 8]
weight_width = [3, 4, 6, 8]
bias_width = [4, 8, 16]
weight_frac_width = [2, "auto"]
[search.strategy]
sampler = "random"
seed = 3
n_trials = 3
[search.metrics.accuracy]
[search.metrics.size]
"""
WEIGHT = "q.by_type.linear.weight_width"


def _space(body: dict) -> SearchSpace:
    return SearchSpace.build(Search.model_validate(body))


def test_default_and_narrowest_points():
    space = _space({
        "quantization": {"by_type": {"linear": {
            "data_in_width": [4, 6], "weight_width": [2, 4, 6], "bias_width": [4, 8, 16],
            "weight_frac_width": [3, "auto"], "enabled": [False, True],
        }}},
        "metrics": {"accuracy": {}}, "strategy": {"sampler": "random", "n_trials": 5},
    })  # fmt: skip
    default, narrow = space.obvious_points()
    q = "q.by_type.linear."
    # 8 bits where it is a choice, else the nearest (6 for both below); quantization on
    assert default == {q + "data_in_width": 6, q + "weight_width": 6, q + "bias_width": 8,
                       q + "weight_frac_width": "auto", q + "enabled": True}  # fmt: skip
    assert narrow == {q + "data_in_width": 4, q + "weight_width": 2, q + "bias_width": 4,
                      q + "weight_frac_width": "auto", q + "enabled": True}  # fmt: skip


def test_a_space_whose_points_coincide_gives_one_point():
    space = _space({"quantization": {"by_type": {"linear": {"weight_frac_width": [2, "auto"]}}},
                    "metrics": {"accuracy": {}}})  # fmt: skip
    assert space.obvious_points() == [{"q.by_type.linear.weight_frac_width": "auto"}]


def test_the_search_measures_them_first(write_config, tmp_path):
    config = load_search_config(write_config(SPACE))
    result = run_search(config, run_dir=tmp_path / "run", progress=False)
    trials = result.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # none left waiting
    assert trials[0].params[WEIGHT] == 8 and trials[1].params[WEIGHT] == 3
    assert trials[0].params["q.by_type.linear.bias_width"] == 8
    assert {t.params["q.by_type.linear.weight_frac_width"] for t in trials[:2]} == {"auto"}


def test_a_budget_of_one_runs_the_8_bit_point_and_leaves_nothing_waiting(write_config, tmp_path):
    config = load_search_config(write_config(SPACE.replace("n_trials = 3", "n_trials = 1")))
    trials = run_search(config, run_dir=tmp_path / "run", progress=False).study.trials
    assert len(trials) == 1 and trials[0].params[WEIGHT] == 8


def test_enqueue_obvious_false_leaves_the_sampler_alone(write_config, tmp_path):
    body = SPACE.replace("n_trials = 3", "n_trials = 2\nenqueue_obvious = false")
    config = load_search_config(write_config(body))
    trials = run_search(config, run_dir=tmp_path / "run", progress=False).study.trials
    # seed 3 of the random sampler draws other points than the two obvious ones
    firsts = [(t.params[WEIGHT], t.params["q.by_type.linear.data_in_width"]) for t in trials]
    assert firsts != [(8, 8), (3, 4)]
    assert not any(t.system_attrs.get("fixed_params") for t in trials)
