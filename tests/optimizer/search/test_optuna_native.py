"""One feasible Pareto set: Optuna's ``study.best_trials`` (the dashboard's source), onnxopt's
best set, ``status`` and ``select`` agree on a search with infeasible trials; drops of
counted metrics compare in whole samples (the limit itself is feasible)."""

from __future__ import annotations

import math

import pytest

from onnxopt.config.search import load_search_config
from onnxopt.metrics import allowed_samples
from onnxopt.optimizer.search.measure import drop_value
from onnxopt.optimizer.search.run import run_search
from onnxopt.optimizer.search.select import parse_rule, select_trial
from onnxopt.optimizer.search.study import JOURNAL_FILE, load_study
from onnxopt.report.status import study_status
from tests.optimizer.search.conftest import QUANT_18

SEARCH = (
    QUANT_18
    + """
[search.strategy]
sampler = "brute-force"
n_trials = 18
[search.metrics.accuracy]
[search.metrics.average_bitwidth]
[search.constraints]
max_accuracy_drop = 0.03
"""
)


def test_optunas_best_trials_are_onnxopts_pareto_set(write_config, tmp_path):
    config = load_search_config(write_config(SEARCH))
    result = run_search(config, run_dir=tmp_path / "run", progress=False)
    trials = result.study.trials
    infeasible = [t for t in trials if not t.user_attrs["feasible"]]
    assert infeasible and len(infeasible) < len(trials)
    # Optuna holds the constraints itself (system attrs), and they are the stored ones
    assert all(t.constraints == t.user_attrs["constraints"] for t in trials)
    ours = [t.number for t in result.best]
    assert ours and not {t.number for t in infeasible} & set(ours)
    # the dashboard reads the journal on disk: its best trials are ours
    stored = load_study(str(tmp_path / "run" / JOURNAL_FILE), "onnxopt-search")
    assert sorted(t.number for t in stored.best_trials) == ours
    assert [row["number"] for row in study_status(str(tmp_path / "run")).best] == ours
    # without the constraints an infeasible trial would be on the front (the fewest bits)
    done = [(t.values[0], -t.values[1]) for t in trials]
    undominated = [
        t for t, v in zip(trials, done, strict=True)
        if not any(all(o >= x for o, x in zip(other, v, strict=True)) and other != v
                   for other in done)
    ]  # fmt: skip
    assert any(not t.user_attrs["feasible"] for t in undominated)
    baseline = result.baseline
    rule = parse_rule("min average_bitwidth where accuracy_drop <= 0.03")
    pick = select_trial(trials, rule, baseline, len(result.context.dataset.val))
    assert pick.number in ours


def test_a_drop_of_exactly_the_allowed_samples_is_feasible_one_more_is_not():
    n = 400
    baseline, limit = 398 / n, 0.02  # the case: 8 of 400 samples lost
    assert allowed_samples(limit, n) == 8
    at_limit = baseline - 390 / n
    assert at_limit - limit > 0  # as floats the boundary is a rounding error above the limit
    assert drop_value(at_limit, limit, n, counted=True) == 0.0  # feasible
    assert drop_value(baseline - 389 / n, limit, n, counted=True) == pytest.approx(1 / n)
    assert drop_value(baseline - 398 / n, limit, n, counted=True) == pytest.approx(-8 / n)
    # metrics that are not shares of the samples keep the plain difference
    assert drop_value(0.0125, 0.01, n, counted=False) == pytest.approx(0.0025)


@pytest.mark.parametrize(("limit", "n", "allowed"), [
    (0.02, 400, 8), (0.03, 100, 3), (0.1, 30, 3), (0.07, 100, 7), (0.0, 400, 0),
    (0.015, 400, 6), (0.0151, 400, 6), (1.0, 360, 360),
])  # fmt: skip
def test_allowed_samples_is_the_floor_of_limit_times_n(limit, n, allowed):
    assert allowed_samples(limit, n) == allowed == math.floor(round(limit * n, 6))


def test_the_search_measures_the_boundary_as_feasible(write_config, tmp_path):
    """A real candidate: with the limit set to its own drop in samples it is feasible, one
    sample tighter it is not (and only the constraint value moves)."""
    from onnxopt.optimizer.search.context import SearchContext
    from onnxopt.optimizer.search.measure import Evaluator

    config = load_search_config(write_config(SEARCH))
    ctx = SearchContext.prepare(config, tmp_path / "run")
    baseline = ctx.baseline()
    n = len(ctx.dataset.val)
    point = {"q.by_type.linear.data_in_width": 4, "q.by_type.linear.weight_width": 2,
             "q.by_type.linear.bias_width": 8}  # fmt: skip
    model = ctx.builder.build(ctx.space, ctx.space.decode(ctx.space.encode(point))).model
    base_ev = ctx.evaluator.for_trials(baseline, ctx.reference())
    whole = config.search.evaluation.model_copy(update={"screening": 0.0})  # no early stop
    accuracy = Evaluator(
        base_ev.measurer, whole, config.search.constraints, baseline=baseline
    ).measure(model, latency=False).metrics["accuracy"]
    lost = round((baseline["accuracy"] - accuracy) * n)
    assert lost >= 2, "2-bit weights should lose samples"

    def evaluator(limit: float) -> Evaluator:
        limits = config.search.constraints.model_copy(update={"max_accuracy_drop": limit})
        return Evaluator(base_ev.measurer, config.search.evaluation, limits, baseline=baseline)

    at = evaluator(lost / n).measure(model, latency=False)
    assert at.constraints["accuracy_drop"] == 0.0 and at.feasible
    tighter = evaluator((lost - 1) / n).measure(model, latency=False)
    assert tighter.constraints["accuracy_drop"] == pytest.approx(1 / n) and not tighter.feasible
