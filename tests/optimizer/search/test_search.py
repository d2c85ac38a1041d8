"""End-to-end searches on digits-mlp: brute force, constraints, failing candidates."""

from __future__ import annotations

import onnx
import pytest
from optuna.trial import TrialState

from onnxopt.config.search import load_search_config
from onnxopt.errors import RewriteError
from onnxopt.optimizer.search.candidate import Candidate, CandidateBuilder
from onnxopt.optimizer.search.run import export_best, run_search
from onnxopt.optimizer.search.study import JOURNAL_FILE, load_study
from tests.optimizer.search.conftest import QUANT_18

BRUTE = (
    QUANT_18
    + """
[search.strategy]
sampler = "brute-force"
n_trials = 30
[search.metrics.accuracy]
[search.metrics.average_bitwidth]
scale = 0.2
[search.constraints]
max_accuracy_drop = 0.03
"""
)


def test_brute_force_visits_each_point_once_and_respects_constraints(write_config, tmp_path):
    config = load_search_config(write_config(BRUTE))
    result = run_search(config, run_dir=tmp_path / "run", progress=False)
    trials = result.study.trials
    assert len(trials) == 18  # stopped although n_trials is 30
    points = {tuple(sorted(t.params.items())) for t in trials}
    assert len(points) == 18 and all(t.state is TrialState.COMPLETE for t in trials)
    infeasible = [t for t in trials if not t.user_attrs["feasible"]]
    assert infeasible, "2-bit weights should break the 3% accuracy-drop limit"
    assert all("latency" not in t.user_attrs["metrics"] for t in infeasible)  # skipped
    assert all("latency_skipped" in t.user_attrs for t in infeasible)
    base = result.baseline["accuracy"]
    assert result.best and all(t.user_attrs["feasible"] for t in result.best)
    assert all(base - t.user_attrs["metrics"]["accuracy"] <= 0.03 for t in result.best)
    assert not {t.number for t in infeasible} & {t.number for t in result.best}
    # size is the bytes written to disk, and the export rebuilds the same model
    exported = export_best(result, ort_format=False)
    for e, t in zip(exported, result.best, strict=True):
        assert e.size_bytes == t.user_attrs["metrics"]["size"] == e.onnx_path.stat().st_size
        assert e.hash_matches and 0 < e.test_accuracy <= 1


def _broken(model: onnx.ModelProto) -> onnx.ModelProto:
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    bad.graph.node[0].op_type = "NoSuchOp"
    return bad


def test_failing_candidate_is_a_fail_trial_and_search_goes_on(write_config, tmp_path, monkeypatch):
    original = CandidateBuilder.build

    def build(self, space, choice):
        candidate = original(self, space, choice)
        if choice.quant["by_type.linear"]["weight_width"] == 2:
            return Candidate(_broken(candidate.model), candidate.quantization, candidate.width)
        return candidate

    monkeypatch.setattr(CandidateBuilder, "build", build)
    body = BRUTE.replace("n_trials = 30", "n_trials = 18")
    result = run_search(load_search_config(write_config(body)), run_dir=tmp_path, progress=False)
    failed = [t for t in result.study.trials if t.state is TrialState.FAIL]
    assert len(failed) == 6 and len(result.study.trials) == 18
    assert all("NoSuchOp" in t.user_attrs["fail_reason"] for t in failed)
    assert all(t.params["q.by_type.linear.weight_width"] == 2 for t in failed)


def test_trial_that_onnxopt_refuses_or_gives_nan_fails_with_its_reason(
    write_config, tmp_path, monkeypatch
):
    from onnxopt.optimizer.search import measure as measure_module

    original_build = CandidateBuilder.build
    original_finite = measure_module.check_finite

    def build(self, space, choice):
        width = choice.quant["by_type.linear"]["weight_width"]
        if width == 2:
            raise RewriteError("the rewrite cannot do this point")
        candidate = original_build(self, space, choice)
        if width == 4:  # mark it: its loss comes out NaN below
            marked = onnx.ModelProto()
            marked.CopyFrom(candidate.model)
            marked.doc_string = "nan-loss"
            return Candidate(marked, candidate.quantization, candidate.width)
        return candidate

    measuring = {"marked": False}
    original_measure = measure_module.Evaluator.measure

    def measure_marked(self, model, **kwargs):
        measuring["marked"] = model.doc_string == "nan-loss"
        return original_measure(self, model, **kwargs)

    def check_finite(metrics):
        if measuring["marked"]:
            metrics["loss"] = float("nan")
        original_finite(metrics)

    monkeypatch.setattr(CandidateBuilder, "build", build)
    monkeypatch.setattr(measure_module.Evaluator, "measure", measure_marked)
    monkeypatch.setattr(measure_module, "check_finite", check_finite)
    body = BRUTE.replace("n_trials = 30", "n_trials = 18")
    result = run_search(load_search_config(write_config(body)), run_dir=tmp_path, progress=False)
    trials = result.study.trials
    assert len(trials) == 18
    by_width: dict[int, list] = {}
    for t in trials:
        by_width.setdefault(t.params["q.by_type.linear.weight_width"], []).append(t)
    assert all(t.state is TrialState.FAIL for t in by_width[2])
    reason = "RewriteError: the rewrite cannot do this point"
    assert all(t.user_attrs["fail_reason"] == reason for t in by_width[2])
    assert all(t.state is TrialState.FAIL for t in by_width[4])
    assert all("loss are not finite" in t.user_attrs["fail_reason"] for t in by_width[4])
    assert all(t.state is TrialState.COMPLETE for t in by_width[8])


def test_a_bug_in_onnxopt_stops_the_search_and_its_point_runs_again(
    write_config, tmp_path, monkeypatch
):
    """A TypeError is not a failing candidate: the search stops with it; the trial it
    interrupted is failed as interrupted and its point queued for the resumed run."""
    original_build = CandidateBuilder.build
    calls = {"n": 0}

    def build(self, space, choice):
        calls["n"] += 1
        if calls["n"] == 3:
            raise TypeError("a bug in our own code")
        return original_build(self, space, choice)

    monkeypatch.setattr(CandidateBuilder, "build", build)
    config = load_search_config(write_config(BRUTE.replace("n_trials = 30", "n_trials = 6")))
    with pytest.raises(TypeError, match="a bug in our own code"):
        run_search(config, run_dir=tmp_path, progress=False)
    study = load_study(str(tmp_path / JOURNAL_FILE))
    interrupted = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1 and interrupted[0].state is TrialState.FAIL
    waiting = [t for t in study.trials if t.state is TrialState.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [interrupted[0].params]
    monkeypatch.setattr(CandidateBuilder, "build", original_build)
    resumed = run_search(config, run_dir=tmp_path, resume=True, progress=False)
    done = [t for t in resumed.study.trials if t.state is TrialState.COMPLETE]
    assert len(done) == 6 and len({tuple(sorted(t.params.items())) for t in done}) == 6
