"""Selection rules: parsing, feasibility, ties, unknown metrics, and no match."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from onnxopt.errors import UsageError
from onnxopt.optimizer.search.select import Rule, parse_rule, select_trial

BASE = {"accuracy": 0.98}


def _trial(number: int, accuracy: float, size: float, feasible: bool = True, state=None):
    t = create_trial(
        state=state or TrialState.COMPLETE,
        values=None if state is TrialState.FAIL else [accuracy, size],
        params={"w": number},
        distributions={"w": CategoricalDistribution(list(range(10)))},
        user_attrs={"metrics": {"accuracy": accuracy, "size": size}},
        constraints={"size": -1.0 if feasible else 5.0},  # where Optuna keeps them
    )
    t.number = number
    return t


TRIALS = [
    _trial(0, 0.98, 1000),
    _trial(1, 0.975, 400),
    _trial(2, 0.96, 100),  # smallest, but 2 points below the baseline
    _trial(3, 0.979, 300, feasible=False),  # violates a search constraint
    _trial(4, 0.975, 400),  # ties trial 1: the lower number wins
    _trial(5, 0.99, 50, state=TrialState.FAIL),
]


def test_parse_rule_with_conditions():
    rule = parse_rule("min size where accuracy_drop <= 0.01 and accuracy > 0.5")
    assert rule == Rule("min", "size", (("accuracy_drop", "<=", 0.01), ("accuracy", ">", 0.5)))
    assert parse_rule("  max accuracy ") == Rule("max", "accuracy", ())


@pytest.mark.parametrize(
    "text, message",
    [
        ("smallest size", "must start with 'min METRIC'"),
        ("min", "must start with 'min METRIC'"),
        ("min size where accuracy_drop =< 0.01", "must look like"),
        ("min size where accuracy_drop <= 1e", "is not a number"),
    ],
)
def test_parse_rule_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_rule(text)


def test_smallest_within_one_point_skips_infeasible_and_failed():
    rule = parse_rule("min size where accuracy_drop <= 0.01")
    assert select_trial(TRIALS, rule, BASE).number == 1  # 3 is infeasible, 5 failed, 2 too low
    assert select_trial(TRIALS, parse_rule("min size"), BASE).number == 2
    assert select_trial(TRIALS, parse_rule("max accuracy"), BASE).number == 0


def test_unknown_metric_names_the_closest():
    with pytest.raises(UsageError, match="unknown metric 'sise'.*size"):
        select_trial(TRIALS, parse_rule("min sise"), BASE)
    with pytest.raises(UsageError, match="unknown metric 'acuracy_drop'"):
        select_trial(TRIALS, parse_rule("min size where acuracy_drop <= 0.01"), BASE)


def test_no_trial_meets_the_rule():
    with pytest.raises(UsageError, match="no feasible finished trial meets the rule"):
        select_trial(TRIALS, parse_rule("min size where accuracy >= 0.999"), BASE)


def test_select_works_on_trials_of_a_real_study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for t in TRIALS:
        study.add_trial(t)
    chosen = select_trial(study.get_trials(), parse_rule("min size where accuracy_drop <= 0.01"),
                          BASE)  # fmt: skip
    assert chosen.params == {"w": 1}


def test_an_accuracy_drop_of_exactly_the_rule_s_samples_meets_it():
    """398 of 400 right at fp32, 390 of 400 for the trial: 8 samples, exactly 0.02."""
    trials = [_trial(0, 390 / 400, 10), _trial(1, 399 / 400, 900)]
    rule = parse_rule("min size where accuracy_drop <= 0.02")
    assert 398 / 400 - 390 / 400 > 0.02  # the float difference alone would miss it
    assert select_trial(trials, rule, {"accuracy": 398 / 400}, samples=400).number == 0
