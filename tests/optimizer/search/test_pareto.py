"""The feasible Pareto set, on trials whose front is computed by hand."""

from __future__ import annotations

import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from onnxopt.optimizer.search.pareto import best_trials, dominates, is_feasible


def trial(number: int, values, constraints=None, state=TrialState.COMPLETE, point=None):
    t = create_trial(
        state=state,
        values=None if state is not TrialState.COMPLETE else list(values),
        params={"p": number if point is None else point},
        distributions={"p": CategoricalDistribution(list(range(100)))},
        constraints=constraints or None,
    )
    t.number = number
    return t


MAX_MIN = ["maximize", "minimize"]  # accuracy up, size down


def test_hand_computed_front_of_accuracy_and_size():
    trials = [
        trial(0, (0.90, 100)),  # front
        trial(1, (0.90, 120)),  # same accuracy, larger: weakly dominated by 0
        trial(2, (0.95, 300)),  # front: most accurate
        trial(3, (0.80, 50)),  # front: smallest
        trial(4, (0.85, 120)),  # dominated by 0 in both
        trial(5, (0.99, 40), constraints={"accuracy_drop": 0.01}),  # best everywhere, infeasible
        trial(6, (0.0, 0.0), state=TrialState.FAIL),
        trial(7, (0.90, 100), point=0),  # point 0 again: one trial per distinct model
        trial(8, (0.80, 50)),  # another model with 3's values: on the front, as in Optuna
    ]
    assert [t.number for t in best_trials(trials, MAX_MIN)] == [0, 2, 3, 8]


def test_weak_dominance_counts():
    assert dominates([0.9, -100], [0.9, -120])  # equal in one, better in the other
    assert not dominates([0.9, -100], [0.9, -100])  # equal everywhere
    assert not dominates([0.95, -300], [0.9, -100])  # a trade-off


def test_one_objective_is_the_best_feasible_trial_first_on_ties():
    trials = [trial(0, (0.5,)), trial(1, (0.7,)), trial(2, (0.7,)),
              trial(3, (0.9,), constraints={"size": 5.0})]  # fmt: skip
    assert [t.number for t in best_trials(trials, ["maximize"])] == [1]
    assert [t.number for t in best_trials(trials, ["minimize"])] == [0]


@pytest.mark.parametrize(
    ("constraints", "feasible"),
    [({}, True), ({"a": 0.0}, True), ({"a": -1.0, "b": 0.0}, True), ({"a": 1e-9}, False)],
)
def test_feasible_means_every_constraint_at_most_zero(constraints, feasible):
    assert is_feasible(trial(0, (1.0,), constraints=constraints)) is feasible


def test_nothing_feasible_gives_an_empty_front():
    trials = [trial(0, (0.9, 10), constraints={"a": 1.0}), trial(1, (0, 0), state=TrialState.FAIL)]
    assert best_trials(trials, MAX_MIN) == []
