"""A model is measured once per search process: trials that build the same bytes share it."""

from __future__ import annotations

from optuna.trial import TrialState

from onnxopt.config.search import load_search_config
from onnxopt.optimizer.search import measure as measure_module
from onnxopt.optimizer.search.run import run_search
from tests.optimizer.search.conftest import QUANT_18

RANDOM_30 = (
    QUANT_18
    + """
[search.strategy]
sampler = "random"
n_trials = 30
seed = 0
exhaust_small_spaces = false
[search.metrics.accuracy]
[search.metrics.latency]
[search.evaluation]
batch_sizes = [1]
warmup = 1
repeats = 3
min_time_s = 0
"""
)


def test_revisited_points_reuse_the_measurement_of_their_model(
    write_config, tmp_path, monkeypatch
):
    measured: list[bytes] = []
    original = measure_module.Evaluator.measure

    def counting(self, model, **kwargs):
        measured.append(model.SerializeToString())
        return original(self, model, **kwargs)

    monkeypatch.setattr(measure_module.Evaluator, "measure", counting)
    config = load_search_config(write_config(RANDOM_30))
    result = run_search(config, run_dir=tmp_path / "run", progress=False)
    trials = result.study.get_trials()
    assert len(trials) == 30 and all(t.state is TrialState.COMPLETE for t in trials)
    hashes = [t.user_attrs["model_sha256"] for t in trials]
    assert len(set(hashes)) < 30, "random on 18 points revisits some"
    # one measurement per distinct model, and one of the fp32 baseline before the trials
    assert len(measured) == 1 + len(set(hashes))
    assert len(set(measured)) == len(measured)
    by_hash: dict[str, dict] = {}
    for t in trials:
        first = by_hash.setdefault(t.user_attrs["model_sha256"], t.user_attrs["metrics"])
        assert t.user_attrs["metrics"] == first
        assert list(t.values) == [first["accuracy"], first["latency"]]
