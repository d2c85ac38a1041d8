"""Screening: a candidate scored a share of the validation split at a time is stopped only
when it can no longer meet max_accuracy_drop, and the search's results do not change."""

from __future__ import annotations

import math

from optuna.trial import TrialState

from onnxopt.config.search import load_search_config
from onnxopt.optimizer.search.pareto import is_feasible
from onnxopt.optimizer.search.run import run_search
from onnxopt.report.ship import counts_line, trial_counts

SPACE = """
[search.quantization.by_type.linear]
data_in_width = [2, 4, 8]
weight_width = [2, 4, 8]
[search.strategy]
sampler = "brute-force"
n_trials = 9
[search.metrics.accuracy]
[search.metrics.size]
[search.constraints]
max_accuracy_drop = 0.01
[search.evaluation]
batch_sizes = [1]
warmup = 1
repeats = 3
min_time_s = 0
"""


def _by_point(study):
    return {tuple(sorted(t.params.items())): t for t in study.trials}


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("latency")}


def test_screening_stops_only_hopeless_points_and_keeps_the_results(write_config, tmp_path):
    screened = run_search(load_search_config(write_config(SPACE)), run_dir=tmp_path / "s",
                          progress=False)  # fmt: skip
    full_config = write_config(SPACE + "screening = 0\n", name="full.toml")
    full = run_search(load_search_config(full_config), run_dir=tmp_path / "f", progress=False)
    a, b = _by_point(screened.study), _by_point(full.study)
    assert set(a) == set(b) and len(a) == 9
    stopped = [p for p, t in a.items() if t.user_attrs["screened"]["stopped"]]
    assert stopped, "2-bit points lose far more than 1 point: some must stop early"
    for point in stopped:
        t, whole = a[point], b[point]
        assert t.state is TrialState.COMPLETE and not is_feasible(t)
        assert t.user_attrs["screened"]["scored"] < t.user_attrs["screened"]["of"] == 360
        assert "accuracy" not in t.user_attrs["metrics"] and t.values[0] == -math.inf
        # exact: measured on the whole split the point is infeasible, by at least the bound
        # the screened trial recorded
        true_drop = whole.user_attrs["constraints"]["accuracy_drop"]
        assert true_drop >= t.user_attrs["constraints"]["accuracy_drop"] > 0
    for point in set(a) - set(stopped):  # measured exactly as without screening
        assert _untimed(a[point].user_attrs["metrics"]) == _untimed(b[point].user_attrs["metrics"])
        assert a[point].user_attrs["constraints"] == b[point].user_attrs["constraints"]
    assert {t.number for t in screened.best} == {t.number for t in full.best}
    assert all("screened" not in t.user_attrs for t in full.study.trials)
    counts = trial_counts(screened.study.trials)
    assert counts.stopped == len(stopped) and 0 < counts.samples_saved < 1
    assert f"screening stopped {len(stopped)} early" in counts_line(counts)
