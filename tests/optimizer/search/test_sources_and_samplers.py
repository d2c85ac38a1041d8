"""Model sources (torch factory + weights) and every sampler running a real study."""

from __future__ import annotations

import pytest
import torch
from optuna.trial import TrialState

from onnxopt.config.search import load_search_config
from onnxopt.errors import ConfigError
from onnxopt.optimizer.search.run import SearchContext, run_search
from tests.optimizer.search.conftest import QUANT_18

CHEAP = """
[search.evaluation]
batch_sizes = [1]
repeats = 3
min_time_s = 0
"""


def test_factory_model_with_weights_is_exported_and_searched(trained_recipe, tmp_path):
    weights = tmp_path / "mlp.pt"
    torch.save(trained_recipe("digits-mlp").module.state_dict(), weights)
    path = tmp_path / "factory.toml"
    path.write_text(f"""
[model]
factory = "tests.optimizer.search.factory_models:digits_mlp"
weights = "mlp.pt"
input_shape = [64]
{QUANT_18}{CHEAP}
[search.strategy]
sampler = "random"
n_trials = 3
""")
    result = run_search(load_search_config(path), run_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "base.onnx").is_file()
    assert result.baseline["accuracy"] > 0.95  # the trained weights were loaded, not random ones
    assert len(result.study.trials) == 3


def test_factory_needs_an_input_shape(tmp_path):
    path = tmp_path / "f.toml"
    path.write_text('[model]\nfactory = "m:f"\n' + QUANT_18)
    with pytest.raises(ConfigError, match="model.factory needs model.input_shape"):
        load_search_config(path)


@pytest.mark.parametrize("sampler", ["gp", "cmaes", "qmc", "nsgaiii", "tpe", "nsgaii"])
def test_every_sampler_runs_a_study(write_config, tmp_path, sampler):
    n = 7 if sampler in ("gp", "cmaes") else 5  # past their 5 random start-up trials
    body = (
        QUANT_18
        + CHEAP
        + f"""
[search.strategy]
sampler = "{sampler}"
n_trials = {n}
[search.metrics.accuracy]
[search.metrics.average_bitwidth]
"""
    )
    if sampler in ("gp", "cmaes"):  # one objective: scaled sum
        body = body.replace("[search.metrics.accuracy]", "[search.metrics.accuracy]\n", 1)
        body = body.replace(f"n_trials = {n}", f"n_trials = {n}\nsum_scaled_metrics = true")
    result = run_search(load_search_config(write_config(body)), run_dir=tmp_path, progress=False)
    trials = result.study.trials
    assert len(trials) == n and all(t.state is TrialState.COMPLETE for t in trials)
    assert result.best
    space = result.context.space
    for t in trials:  # every stored point decodes to valid widths
        quant = space.decode(t.params).quant["by_type.linear"]
        assert quant["weight_width"] in (2, 4, 8) and quant["data_in_width"] in (4, 8)


def test_enqueued_point_with_a_typo_is_a_config_error(write_config, tmp_path):
    body = (
        QUANT_18
        + """
[search.strategy]
sampler = "random"
enqueue = [{"q.by_type.linear.weigth_width" = 8}]
"""
    )
    config = load_search_config(write_config(body))
    with pytest.raises(ConfigError, match="unknown parameter.*q.by_type.linear.weight_width"):
        SearchContext.prepare(config, tmp_path)


def test_enqueued_value_outside_the_choices(write_config, tmp_path):
    point = ('{"q.by_type.linear.weight_width" = 3, "q.by_type.linear.data_in_width" = 8, '
             '"q.by_type.linear.bias_width" = 8}')  # fmt: skip
    body = QUANT_18 + f'[search.strategy]\nsampler = "random"\nenqueue = [{point}]\n'
    config = load_search_config(write_config(body))
    with pytest.raises(ConfigError, match=r"weight_width = 3 is not one of \[2, 4, 8\]"):
        SearchContext.prepare(config, tmp_path)


def _two_outputs(exported_recipe, tmp_path):
    """digits-mlp with a second 10-wide output (softmax), so the class scores are ambiguous."""
    import onnx
    from onnx import helper

    model = onnx.load(exported_recipe("digits-mlp"))
    logits = model.graph.output[0]
    model.graph.node.append(helper.make_node("Softmax", [logits.name], ["probs"], axis=-1))
    probs = onnx.ValueInfoProto()
    probs.CopyFrom(logits)
    probs.name = "probs"
    model.graph.output.append(probs)
    path = tmp_path / "two.onnx"
    onnx.save(model, path)
    return path, logits.name


def test_ambiguous_output_is_refused_before_a_study_exists(exported_recipe, tmp_path):
    from onnxopt.errors import UsageError
    from onnxopt.optimizer.search.study import JOURNAL_FILE

    path, logits = _two_outputs(exported_recipe, tmp_path)
    config = tmp_path / "c.toml"
    text = f'[model]\nonnx = "{path}"\n{QUANT_18}{CHEAP}[search.strategy]\nn_trials = 2\n'
    config.write_text(text)
    with pytest.raises(UsageError, match="probs"):
        run_search(load_search_config(config), run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / JOURNAL_FILE).exists()  # no study, not even a file
    config.write_text(text.replace("[model]\n", f'[model]\noutput = "{logits}"\n'))
    result = run_search(load_search_config(config), run_dir=tmp_path / "run", progress=False)
    assert len(result.study.trials) == 2 and result.baseline["accuracy"] > 0.95
