"""The real recipes, exported: every mode on every node keeps consecutive layers in step.

The issue asks for shapes consistent across a chain of three layers for every mode, for the
lab's jsc-three-linear-layers and for digits-cnn. ``test_width_models.py`` proves it on
hand-built copies; here the graphs come from ``onnxopt.models`` through the real exporter.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from width_models import ATOL, RECIPE_SHAPES, RTOL, check, initializer, run

from onnxopt.errors import ConfigError
from onnxopt.optimizer.width import Mode, WidthConfig, WidthScaler, analyze_channels
from onnxopt.optimizer.width.plan import new_width

SIDES = {"output_only": ("output",), "input_only": ("input",), "both": ("input", "output")}


@pytest.fixture(scope="module")
def scalers(untrained_recipe) -> dict[str, tuple[onnx.ModelProto, WidthScaler, np.ndarray]]:
    """One base model, scaler and input batch per recipe (calibration = the same batch)."""
    out = {}
    for name, (_, _, shape) in RECIPE_SHAPES.items():
        model = untrained_recipe(name)
        x = np.random.default_rng(0).uniform(-1, 2, (48, *shape)).astype(np.float32)
        out[name] = (model, WidthScaler(model, x), x)
    return out


def _in_out(model: onnx.ModelProto, spec) -> tuple[int, int]:
    w = initializer(model, spec.name, 1)
    return int(w.shape[spec.in_axis]), int(w.shape[spec.out_axis])


def _groups(scaler: WidthScaler, node: str, mode: str) -> list | None:
    """The groups a mode on ``node`` scales, or None when one of them cannot be scaled."""
    a = scaler.analysis
    tables = {"input": a.input_group, "output": a.output_group}
    groups = [a.groups[tables[s][node]] if node in tables[s] else None for s in SIDES[mode]]
    return None if any(g is None or g.frozen for g in groups) else groups


@pytest.mark.parametrize("recipe", RECIPE_SHAPES)
@pytest.mark.parametrize("mode", [m.value for m in Mode])
@pytest.mark.parametrize("multiplier", [0.5, 2.0])
def test_every_mode_on_every_node_of_the_exported_recipes(scalers, recipe, mode, multiplier):
    model, scaler, x = scalers[recipe]
    reference = run(model, x)
    chain = sorted(scaler.analysis.weight_nodes.values(), key=lambda w: w.index)
    assert len(chain) >= 3  # a chain of at least three layers
    scaled_any = False
    for spec in chain:
        config = WidthConfig(layers={spec.name: {"mode": mode, "channel_multiplier": multiplier}})
        groups = _groups(scaler, spec.name, mode)
        if groups is None:  # a graph input or output on that side: refused, with the reason
            with pytest.raises(ConfigError, match=rf"layers\.{spec.name}: .*(frozen|constant)"):
                scaler.scale(config)
            continue
        scaled_any = True
        result = scaler.scale(config)
        check(result.model)  # onnx.checker full check and strict shape inference
        out = run(result.model, x)
        assert out.shape == reference.shape
        if multiplier > 1:
            np.testing.assert_allclose(out, reference, rtol=RTOL, atol=ATOL)
        expected = {g.name: g.width for g in scaler.analysis.groups}
        expected |= {g.name: new_width(g.width, multiplier) for g in groups}
        assert {(c.group, c.new_width) for c in result.changes} == {
            (g.name, expected[g.name]) for g in groups
        }
        after = analyze_channels(result.model)
        for first, second in zip(chain, chain[1:], strict=False):
            width = _in_out(result.model, first)[1]
            assert width == _in_out(result.model, second)[0], (spec.name, first.name)
            assert width == expected[after.groups[after.output_group[first.name]].name]
        assert [g.name for g in after.groups] == [g.name for g in scaler.analysis.groups]
    assert scaled_any
