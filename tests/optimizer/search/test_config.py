"""Search config: typed, unknown keys and samplers rejected with the closest name."""

import pytest

from onnxopt.config.search import load_search_config
from onnxopt.errors import ConfigError
from onnxopt.optimizer.search.space import SearchSpace
from tests.optimizer.search.conftest import QUANT_18


def test_lab_space_has_18_points(write_config):
    config = load_search_config(write_config(QUANT_18))
    space = SearchSpace.build(config.search)
    assert space.size == 18
    assert [d.name for d in space.dimensions] == [
        "q.by_type.linear.data_in_width",
        "q.by_type.linear.weight_width",
        "q.by_type.linear.bias_width",
    ]
    choice = space.decode({d.name: d.choices[0] for d in space.dimensions})
    quant = space.quantization(choice)
    layer = quant.for_node("n", "Gemm")
    assert (layer.data_in_width, layer.weight_width, layer.weight_frac_width) == (4, 2, "NA")


def test_typo_names_the_closest_key(write_config):
    with pytest.raises(ConfigError, match="weight_widht.*weight_width"):
        load_search_config(write_config(QUANT_18.replace("weight_width", "weight_widht")))


def test_unknown_sampler(write_config):
    body = QUANT_18 + '[search.strategy]\nsampler = "tpee"\n'
    with pytest.raises(ConfigError, match="unknown sampler 'tpee'.*'tpe'"):
        load_search_config(write_config(body))


def test_unknown_metric(write_config):
    body = QUANT_18 + "[search.metrics.acuracy]\nscale = 1.0\n"
    with pytest.raises(ConfigError, match="acuracy.*accuracy"):
        load_search_config(write_config(body))


def test_width_out_of_range(write_config):
    with pytest.raises(ConfigError, match="weight_width"):
        load_search_config(write_config(QUANT_18.replace("[2, 4, 8]", "[1, 4]", 1)))


def test_cmaes_needs_numeric_choices(write_config):
    body = QUANT_18.replace('weight_frac_width = ["NA"]', 'weight_frac_width = ["NA", "auto"]')
    config = load_search_config(write_config(body + '[search.strategy]\nsampler = "cmaes"\n'))
    with pytest.raises(ConfigError, match="cmaes.*numeric"):
        SearchSpace.build(config.search)


def test_gp_uses_indices(write_config):
    body = QUANT_18 + '[search.strategy]\nsampler = "gp"\nn_trials = 10\n'  # < 18 points
    config = load_search_config(write_config(body))
    space = SearchSpace.build(config.search)
    assert space.sampler == "gp" and space.ordinal
    choice = space.decode({d.name: len(d.choices) - 1 for d in space.dimensions})
    assert choice.quant["by_type.linear"]["weight_width"] == 8


def test_model_needs_one_source(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[model]\n[search.quantization.default]\nweight_width = [4, 8]\n")
    with pytest.raises(ConfigError, match="exactly one of model.recipe, model.onnx and model"):
        load_search_config(path)
