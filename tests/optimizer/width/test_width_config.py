"""The width config: the lab's vocabulary, strict validation, and errors that name the nodes."""

from __future__ import annotations

import numpy as np
import pytest
from width_models import Net, digits_cnn, jsc_three_linear_layers

from onnxopt.config import load_toml, validate
from onnxopt.errors import ConfigError
from onnxopt.optimizer.width import Mode, WidthConfig, WidthScaler, analyze_channels, scale_width
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
    with pytest.raises(ConfigError) as info:
        scaler.scale(config)
    assert str(info.value) == (
        "layers.conv1: channel_multiplier = [0.5, 1.0, 2.0] is a list of choices for the "
        "search; onnxopt scale needs one number, e.g. channel_multiplier = 0.5"
    )
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


def test_config_errors_name_the_config_file_when_given():
    model = jsc_three_linear_layers()
    data_free = {"importance": "weight_norm", "refit": "none"}
    zero = validate(WidthConfig, {**data_free, "layers": {"fc0": {"channel_multiplier": 1 / 64}}})
    with pytest.raises(ConfigError) as info:
        scale_width(model, zero, source="w.toml")
    assert str(info.value) == (
        "w.toml: layers.fc0.channel_multiplier: 0.015625 x 16 channels of group 'fc0_out' "
        "rounds to 0 channels; use at least 0.03125"
    )
    listed = validate(WidthConfig, {**data_free, "layers": {"fc1": {"channel_multiplier": [2, 1]}}})
    with pytest.raises(
        ConfigError, match=r"^w\.toml: layers\.fc1: channel_multiplier = \[2\.0, 1\.0\]"
    ):
        scale_width(model, listed, source="w.toml")
    with pytest.raises(ConfigError, match=r"^s\.toml: layers\.fc9: no such node"):
        WidthScaler(model).search_space(_config(fc9={"channel_multiplier": 2}), source="s.toml")
    with pytest.raises(ConfigError, match=r"^layers\.fc0\.channel_multiplier: 0\.015625"):
        scale_width(model, zero)  # without a source, the key path alone


def _weights_behind(op: str) -> Net:
    net = Net()
    attrs = {"perm": [1, 0]} if op == "Transpose" else {}
    w = net.op(op, [net.rand("w0", (6, 8) if op == "Transpose" else (8, 6))], "w_op", **attrs)
    x = net.op("Relu", [net.op("MatMul", ["x", w], "mm0")], "r0")
    return net.model(["N", 8], net.op("MatMul", [x, net.rand("w1", (6, 3))], "mm1"), ["N", 3])


def _depthwise_and_grouped() -> Net:
    net = Net()
    x = net.op("Relu", [net.conv("x", 1, 4, "conv0")], "r0")
    x = net.conv(net.conv(x, 4, 4, "dw", group=4), 4, 4, "grouped", group=2)
    x = net.op("Flatten", [net.op("GlobalAveragePool", [x], "gap")], "flat")
    return net.model(["N", 1, 4, 4], net.gemm(x, 4, 2, "fc"), ["N", 2])


@pytest.mark.parametrize(
    ("build", "node", "message"),
    [
        (
            lambda: _weights_behind("Transpose"),
            "mm0",
            (
                "layers.mm0: MatMul node 'mm0' reads its weights 'w_op_out' from Transpose node "
                "'w_op', not from a constant; fold constants first (`onnxopt export MODEL.onnx "
                "-o folded.onnx` does)"
            ),
        ),
        (
            lambda: _weights_behind("Identity"),
            "mm0",
            (
                "layers.mm0: MatMul node 'mm0' reads its weights 'w_op_out' from Identity node "
                "'w_op', not from a constant; fold constants first (`onnxopt export MODEL.onnx "
                "-o folded.onnx` does)"
            ),
        ),
        (
            _depthwise_and_grouped,
            "dw",
            (
                "layers.dw: Conv node 'dw' is a depthwise Conv: each output channel filters its "
                "own input channel, so it has no width of its own; it belongs to group "
                "'conv0_out', which is frozen (Conv node 'grouped' is a grouped Conv (group=2): "
                "each block of 2 output channels reads its own block of 2 input channels, so "
                "neither side can change width alone)"
            ),
        ),
        (
            _depthwise_and_grouped,
            "grouped",
            (
                "layers.grouped: Conv node 'grouped' is a grouped Conv (group=2): each block of 2 "
                "output channels reads its own block of 2 input channels, so neither side can "
                "change width alone"
            ),
        ),
        (
            lambda: digits_cnn(depthwise=True),
            "dw",
            (
                "layers.dw: Conv node 'dw' is a depthwise Conv: each output channel filters its "
                "own input channel, so it has no width of its own; it scales with group "
                "'conv0_out': name its producer conv0 instead"
            ),
        ),
    ],
)
def test_naming_a_node_that_is_not_a_weight_node_gives_the_real_reason(build, node, message):
    analysis = analyze_channels(build())
    with pytest.raises(ConfigError) as info:
        resolve(_config(**{node: {"channel_multiplier": 2}}), analysis)
    assert str(info.value) == message
    assert analysis.refusals[node] == message.removeprefix(f"layers.{node}: ")


def test_weights_from_a_graph_input_or_of_the_wrong_rank_are_named():
    net = Net()
    x = net.op("MatMul", ["x", net.const("w3", np.ones((1, 8, 6), np.float32))], "mm0")
    analysis = analyze_channels(net.model(["N", 8], x, [1, "N", 6]))
    assert analysis.refusals["mm0"] == "MatMul node 'mm0' has weights 'w3' of rank 3, not 2"
