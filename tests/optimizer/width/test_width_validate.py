"""Every scaled model is validated (checker full check, strict shape inference) before use."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from width_models import jsc_three_linear_layers

import onnxopt.model_io as model_io
import onnxopt.optimizer.width.rewrite as rewrite
import onnxopt.optimizer.width.validate as validate
from onnxopt.errors import ModelLoadError, RewriteError
from onnxopt.optimizer.width import EditKind, WidthConfig, WidthScaler, scale_width

DATA_FREE = WidthConfig(importance="weight_norm", refit="none")


@pytest.fixture
def consumers_left_unsplit(monkeypatch):
    """A width pass that forgets the consumers' weights: what a missed edit would produce."""
    real = rewrite._apply
    monkeypatch.setattr(
        rewrite, "_apply", lambda edit, *a: None if edit.kind is EditKind.SPLIT else real(edit, *a)
    )


@pytest.fixture
def shapes_left_stale(monkeypatch):
    """A width pass that writes its weights as float64: right shapes, wrong type; only the
    checker's full check sees it."""
    real = rewrite.set_const_input
    monkeypatch.setattr(
        rewrite, "set_const_input",
        lambda graph, node, index, array, names: real(
            graph, node, index, array.astype(np.float64), names
        ),
    )  # fmt: skip


@pytest.mark.parametrize("multiplier", [0.5, 2.0])
def test_the_pass_postcondition_names_a_weight_left_at_the_old_width(
    consumers_left_unsplit, multiplier
):
    scaler = WidthScaler(jsc_three_linear_layers())
    with pytest.raises(RewriteError) as info:
        scaler.scale_groups({"fc0_out": multiplier}, DATA_FREE)
    new = int(16 * multiplier)
    expected = f"input 1 of 'fc1' does not have {new} channels on axis 1 after scaling"
    assert str(info.value) == expected


@pytest.mark.parametrize("multiplier", [0.5, 2.0])
def test_a_scaled_model_that_does_not_validate_is_refused_naming_the_group(
    shapes_left_stale, multiplier
):
    scaler = WidthScaler(jsc_three_linear_layers())
    with pytest.raises(RewriteError) as info:
        scaler.scale_groups({"fc0_out": multiplier}, DATA_FREE)  # the search's path
    new = int(16 * multiplier)
    message = str(info.value)
    assert message.startswith(
        f"width scaling (group 'fc0_out' 16 -> {new} channels) gave a model that does not "
        "validate ([TypeInferenceError]"
    )
    assert "\n" not in message and message.endswith(
        "leave these groups unscaled and report the model"
    )
    assert info.value.exit_code == 1


def test_scale_and_scale_width_validate_too(shapes_left_stale):
    config = WidthConfig(
        importance="weight_norm", refit="none", layers={"fc1": {"channel_multiplier": 2.0}}
    )
    with pytest.raises(RewriteError, match="group 'fc1_out' 16 -> 32 channels"):
        scale_width(jsc_three_linear_layers(), config)
    with pytest.raises(RewriteError, match="group 'fc1_out' 16 -> 32 channels"):
        WidthScaler(jsc_three_linear_layers()).scale(config)


def test_large_models_are_checked_from_a_file(monkeypatch, shapes_left_stale):
    monkeypatch.setattr(model_io, "IN_MEMORY_LIMIT", 0)
    scaler = WidthScaler(jsc_three_linear_layers())
    with pytest.raises(RewriteError, match="group 'fc0_out' 16 -> 32 channels"):
        scaler.scale_groups({"fc0_out": 2.0}, DATA_FREE)


def test_large_valid_models_pass_the_file_check(monkeypatch):
    monkeypatch.setattr(model_io, "IN_MEMORY_LIMIT", 0)
    result = WidthScaler(jsc_three_linear_layers()).scale_groups({"fc0_out": 2.0}, DATA_FREE)
    assert result.model.graph.initializer[0].HasField("raw_data")  # the caller's copy untouched


def test_a_base_that_does_not_validate_is_not_blamed_on_scaling():
    model = jsc_three_linear_layers()
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 7  # declared 7, computes 5
    scaler = WidthScaler(model)
    with pytest.raises(ModelLoadError, match="does not validate even before width scaling"):
        scaler.scale_groups({"fc0_out": 2.0}, DATA_FREE)


def test_every_successful_scale_is_checked(monkeypatch):
    checked = []
    real = validate.check_full
    monkeypatch.setattr(validate, "check_full", lambda m: checked.append(m) or real(m))
    x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    scaler = WidthScaler(jsc_three_linear_layers(), x)
    for m in (0.5, 2.0):
        result = scaler.scale_groups({"fc0_out": m, "fc1_out": m})
        assert checked[-1] is result.model
    assert len(checked) == 2
    onnx.checker.check_model(checked[0], full_check=True)
