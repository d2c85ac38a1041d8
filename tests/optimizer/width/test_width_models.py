"""Every mode keeps widths consistent along a chain of three layers (JSC and digits-cnn shapes)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from width_models import (
    ATOL,
    RTOL,
    check,
    digits_cnn,
    initializer,
    jsc_three_linear_layers,
    numpy_forward,
    run,
)

from onnxopt.errors import UsageError
from onnxopt.optimizer.width import WidthConfig, WidthScaler, scale_width

# (model, input shape, three weight nodes in a chain, widths of the two groups between them)
CHAINS = {
    "jsc-three-linear-layers": (jsc_three_linear_layers, (16,), ("fc0", "fc1", "fc2"), (16, 16)),
    "digits-cnn": (digits_cnn, (1, 8, 8), ("conv0", "conv1", "conv2"), (16, 32)),
}
EXPECTED = {  # which of the two groups (before, after the middle node) each mode scales
    "output_only": (False, True),
    "input_only": (True, False),
    "both": (True, True),
}


def _in_out(model: onnx.ModelProto, node: str) -> tuple[int, int]:
    w = initializer(model, node, 1)
    return (w.shape[1], w.shape[0])  # Gemm transB=1 and Conv weights are (out, in, ...)


@pytest.mark.parametrize("chain", CHAINS)
@pytest.mark.parametrize("mode", EXPECTED)
@pytest.mark.parametrize("multiplier", [0.5, 1.5])
def test_widths_stay_consistent_along_a_chain_for_every_mode(chain, mode, multiplier):
    build, shape, (first, middle, last), widths = CHAINS[chain]
    model = build()
    x = np.random.default_rng(0).uniform(0, 1, (24, *shape)).astype(np.float32)
    config = WidthConfig(layers={middle: {"mode": mode, "channel_multiplier": multiplier}})
    result = scale_width(model, config, x)
    check(result.model)
    assert len(result.model.graph.node) == len(model.graph.node)
    new = [
        round(w * multiplier) if scaled else w
        for w, scaled in zip(widths, EXPECTED[mode], strict=True)
    ]
    assert _in_out(result.model, first)[1] == _in_out(result.model, middle)[0] == new[0]
    assert _in_out(result.model, middle)[1] == _in_out(result.model, last)[0] == new[1]
    touched = {first, middle} if EXPECTED[mode][0] else set()
    touched |= {middle, last} if EXPECTED[mode][1] else set()
    assert touched <= set(result.nodes_changed)
    out = run(result.model, x)
    assert out.shape == run(model, x).shape
    np.testing.assert_allclose(numpy_forward(result.model, x), out, rtol=1e-4, atol=1e-4)
    if multiplier > 1:
        np.testing.assert_allclose(out, run(model, x), rtol=RTOL, atol=ATOL)
    else:
        refitted = [n for n, scaled in zip((middle, last), EXPECTED[mode], strict=True) if scaled]
        assert [r.node for r in result.refits] == refitted


@pytest.fixture(scope="module")
def exported_cnn(untrained_recipe) -> onnx.ModelProto:
    """digits-cnn through the real exporter (untrained: the graph, not the accuracy, matters)."""
    return untrained_recipe("digits-cnn")


def test_exported_digits_cnn(exported_cnn):
    scaler = WidthScaler(exported_cnn, np.random.default_rng(0).uniform(0, 1, (64, 64)))
    names = [g.name for g in scaler.analysis.scalable_groups]
    assert [scaler.analysis.group(n).width for n in names] == [16, 32, 64]
    assert [g.reasons for g in scaler.analysis.frozen_groups] == [
        ("graph input 'x'",),
        ("reaches graph output 'logits'",),
    ]
    x = np.random.default_rng(1).uniform(0, 1, (10, 1, 8, 8)).astype(np.float32)
    wide = scaler.scale_groups({n: 2.0 for n in names})
    check(wide.model)
    np.testing.assert_allclose(run(wide.model, x), run(exported_cnn, x), rtol=RTOL, atol=ATOL)
    narrow = scaler.scale_groups({n: 0.5 for n in names})
    check(narrow.model)
    assert len(narrow.nodes_changed) == 5 and len(narrow.refits) == 3
    out = run(narrow.model, x)
    np.testing.assert_allclose(numpy_forward(narrow.model, x), out, rtol=1e-4, atol=1e-4)


def test_calibration_is_required_only_when_read():
    model = jsc_three_linear_layers()
    config = WidthConfig(layers={"fc1": {"channel_multiplier": 0.5}})
    with pytest.raises(UsageError, match="pass calibration data to WidthScaler"):
        scale_width(model, config)
    data_free = config.model_copy(update={"importance": "weight_norm", "refit": "none"})
    check(scale_width(model, data_free).model)


def test_base_activations_are_read_once_per_scaler_and_refits_once_per_choice(monkeypatch):
    import onnxopt.optimizer.width.scaler as scaler_module

    calls = []
    real = scaler_module.run_values
    monkeypatch.setattr(scaler_module, "run_values", lambda *a: calls.append(a[2]) or real(*a))
    x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    scaler = WidthScaler(jsc_three_linear_layers(), x)
    config = WidthConfig(layers={"fc1": {"channel_multiplier": 0.5, "mode": "both"}})
    first = scaler.scale(config)
    assert len(calls) == 3  # base activations once, then one run per refitted layer
    again = scaler.scale(config)
    assert len(calls) == 3  # the same group choice: its refits are reused, nothing is run
    assert again.model.SerializeToString() == first.model.SerializeToString()
    assert [r.node for r in again.refits] == [r.node for r in first.refits]


def test_result_reports_changes_refits_and_frozen_groups_as_json():
    x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    config = WidthConfig(layers={"fc0": {"channel_multiplier": 0.5}})
    result = scale_width(jsc_three_linear_layers(), config, x)
    data = json.loads(json.dumps(result.as_dict()))
    assert data["changes"] == [
        {"group": "fc0_out", "old_width": 16, "new_width": 8, "multiplier": 0.5}
    ]
    assert data["frozen"] == {"x": ["graph input 'x'"], "fc2_out": ["reaches graph output 'y'"]}
    assert data["nodes_changed"] == ["fc0", "fc1"] and data["refits"][0]["node"] == "fc1"
    assert result.summary().splitlines() == [
        "group 'fc0_out': 16 -> 8 channels (x0.5)",
        f"refit fc1: 20 rows, 9 unknowns, relative error {result.refits[0].relative_error:.3g}",
        "frozen 'x': graph input 'x'",
        "frozen 'fc2_out': reaches graph output 'y'",
    ]


def test_flat_features_are_reshaped_to_image_inputs():
    model = digits_cnn()
    flat = np.random.default_rng(0).uniform(0, 1, (16, 64)).astype(np.float32)
    config = WidthConfig(layers={"conv1": {"channel_multiplier": 0.5}})
    result = scale_width(model, config, flat)
    assert len(result.refits) == 1
