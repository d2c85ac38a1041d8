"""The width config: the lab's vocabulary, strict validation, and errors that name the nodes."""

from __future__ import annotations

import pytest
from width_models import digits_cnn, jsc_three_linear_layers

from onnxopt.config import load_toml, validate
from onnxopt.errors import ConfigError
from onnxopt.optimizer.width import Mode, WidthConfig, WidthScaler, analyze_channels
from onnxopt.optimizer.width.plan import choose, new_width, resolve


def _config(**layers) -> WidthConfig:
    return validate(WidthConfig, {"layers": layers})


def test_toml_in_the_labs_vocabulary(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text(
        'importance = "weight_norm"\nrefit = "none"\n'
        '[layers.fc0]\nmode = "output_only"\nchannel_multiplier = [0.25, 0.5, 2]\n'
        '[layers.fc1]\nmode = "both"\nchannel_multiplier = 0.5\n'
    )
    config = load_toml(path, WidthConfig)
    assert config.layers["fc0"].channel_multiplier == (0.25, 0.5, 2.0)
    assert config.layers["fc1"].channel_multiplier == (0.5,)
    assert config.layers["fc1"].mode is Mode.BOTH
    assert not config.is_fixed()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"layers": {"fc0": {"channel_multiplier": 0}}}, "outside \\[0.015625, 16\\]"),
        ({"layers": {"fc0": {"channel_multiplier": [0.5, 32]}}}, "multiplier 32.0 is outside"),
        ({"layers": {"fc0": {"channel_multiplier": []}}}, "at least one multiplier"),
        ({"layers": {"fc0": {"channel_multiplier": [0.5, 0.5]}}}, "repeat a value"),
        (
            {"layers": {"fc0": {"channel_multiplier": 1, "mode": "sideways"}}},
            "mode: Input should be",
        ),
        ({"layers": {"fc0": {"channel_multiplir": 1}}}, "did you mean 'channel_multiplier'"),
        ({"layers": {"fc0": {}}}, "channel_multiplier: Field required"),
        ({"ridge": -1}, "ridge: Input should be greater than or equal to 0"),
        ({"importance": "random"}, "importance: Input should be 'activation' or 'weight_norm'"),
    ],
)
def test_invalid_values_are_config_errors(data, message):
    with pytest.raises(ConfigError, match=message) as info:
        validate(WidthConfig, data)
    assert info.value.exit_code == 2


def test_modes_pick_the_groups_of_a_node():
    analysis = analyze_channels(jsc_three_linear_layers())
    names = lambda cfg: sorted(analysis.groups[g].name for g in resolve(cfg, analysis))  # noqa: E731
    assert names(_config(fc1={"channel_multiplier": 2, "mode": "output_only"})) == ["fc1_out"]
    assert names(_config(fc1={"channel_multiplier": 2, "mode": "input_only"})) == ["fc0_out"]
    assert names(_config(fc1={"channel_multiplier": 2, "mode": "both"})) == ["fc0_out", "fc1_out"]


def test_the_labs_three_entries_agree_when_they_share_groups():
    analysis = analyze_channels(jsc_three_linear_layers())
    config = _config(
        fc0={"channel_multiplier": 2, "mode": "output_only"},
        fc1={"channel_multiplier": 2, "mode": "both"},
        fc2={"channel_multiplier": 2, "mode": "input_only"},
    )
    settings = resolve(config, analysis)
    assert sorted(s.choices for s in settings.values()) == [(2.0,), (2.0,)]
    assert len(settings[analysis.group("fc0_out").index].sources) == 2


def test_two_entries_giving_one_group_different_multipliers_name_both_nodes():
    analysis = analyze_channels(jsc_three_linear_layers())
    config = _config(fc0={"channel_multiplier": 2}, fc1={"channel_multiplier": 4, "mode": "both"})
    with pytest.raises(ConfigError) as info:
        resolve(config, analysis)
    text = str(info.value)
    assert "layers.fc0 (output_only" in text and "layers.fc1 (both" in text
    assert "'fc0_out'" in text and "[2.0] and [4.0]" in text


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            {"fc9": {"channel_multiplier": 2}},
            "layers.fc9: no such node; did you mean 'fc2', 'fc1', 'fc0'",
        ),
        ({"relu0": {"channel_multiplier": 2}}, "not a Gemm, MatMul or Conv"),
        (
            {"fc2": {"channel_multiplier": 2}},
            "group 'fc2_out', which is frozen \\(reaches graph output 'y'\\)",
        ),
        (
            {"fc0": {"channel_multiplier": 2, "mode": "both"}},
            "input channels are group 'x', which is frozen \\(graph input 'x'\\)",
        ),
        (
            {"fc0": {"channel_multiplier": 1 / 64}},
            "0.015625 x 16 channels of group 'fc0_out' rounds to 0 channels; use at least 0.03125",
        ),
    ],
)
def test_config_that_does_not_fit_the_model(layers, message):
    with pytest.raises(ConfigError, match=message):
        resolve(_config(**layers), analyze_channels(jsc_three_linear_layers()))


def test_choices_for_the_search():
    model = digits_cnn()
    scaler = WidthScaler(model)
    config = validate(
        WidthConfig,
        {
            "importance": "weight_norm",
            "refit": "none",
            "layers": {
                "conv1": {"channel_multiplier": [0.5, 1, 2]},
                "conv2": {"channel_multiplier": 0.5},
            },
        },
    )
    assert scaler.search_space(config) == {"conv1_out": (0.5, 1.0, 2.0), "conv2_out": (0.5,)}
    with pytest.raises(
        ConfigError, match="lists choices \\[0.5, 1.0, 2.0\\] for group 'conv1_out'; pick one"
    ):
        scaler.scale(config)
    result = scaler.scale(config, {"conv1_out": 2})
    assert [(c.group, c.new_width) for c in result.changes] == [
        ("conv1_out", 64),
        ("conv2_out", 32),
    ]
    settings = resolve(config, scaler.analysis)
    with pytest.raises(ConfigError, match="0.75 is not among the choices"):
        choose(settings, scaler.analysis, {"conv1_out": 0.75})
    with pytest.raises(
        ConfigError, match="'conv0_outt', which the config does not scale; did you mean"
    ):
        choose(settings, scaler.analysis, {"conv1_out": 1, "conv0_outt": 1})


@pytest.mark.parametrize(
    ("width", "m", "expected"),
    [(3, 0.5, 2), (16, 0.25, 4), (10, 0.33, 3), (1, 0.5, 1), (5, 1.3, 7)],
)
def test_new_width_rounds_half_up(width, m, expected):
    assert new_width(width, m) == expected
