"""Spec validation (ConfigError, one line) and container choice."""

from __future__ import annotations

import dataclasses

import pytest

from onnxopt.errors import ConfigError
from onnxopt.optimizer.quantization import (
    Container,
    Granularity,
    NodeQuantSpec,
    Role,
    Storage,
    TensorSpec,
    choose_container,
)
from onnxopt.optimizer.quantization.spec import resolve_container


@pytest.mark.parametrize("width", [1, 17, 0, True, 8.0, "8"])
def test_width_outside_2_to_16_is_a_config_error(width):
    with pytest.raises(ConfigError, match="width must be an integer in 2..16"):
        TensorSpec(width, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frac": (1, 2)}, "needs granularity 'per_channel'"),
        ({"frac": 40}, "outside"),
        ({"frac": 1.5}, "frac must be an integer"),
        ({"frac": []}, "frac must be an integer"),
        ({"granularity": "per_chanel"}, "did you mean 'per_channel'"),
        ({"container": "int7"}, "container: unknown value 'int7'"),
        ({"signed": "yes"}, "signed must be"),
        ({"signed": False, "container": "int8"}, "cannot hold a 8-bit unsigned value"),
    ],
)
def test_bad_tensor_specs_raise_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        TensorSpec(8, **({"frac": 3} | kwargs))
    assert "\n" not in str(info.value)


def test_tensor_spec_coerces_strings_and_lists_and_is_frozen():
    spec = TensorSpec(4, [1, 2], granularity="per_channel", container="int8")
    assert spec.frac == (1, 2)
    assert spec.granularity is Granularity.PER_CHANNEL and spec.per_channel
    assert spec.container is Container.INT8
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.width = 5  # type: ignore[misc]


def _node(**overrides):
    base = {"weight": TensorSpec(8), "bias": TensorSpec(16), "data_in": TensorSpec(8, 4)}
    return NodeQuantSpec(**(base | overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"data_in": TensorSpec(8, 4, granularity="per_channel")}, "per tensor only"),
        ({"data_in": TensorSpec(8)}, "frac must be set"),
        ({"data_out": TensorSpec(8, 2, container="int4")}, "8 or 16 bits"),
        ({"data_out": TensorSpec(8, 2, container="int8")}, "use uint8"),
        ({"weight": TensorSpec(8, container="int32")}, "reserved for biases"),
        ({"bias": TensorSpec(8, container="int8")}, "stored as int32"),
        ({"weight": 8}, "must be a TensorSpec"),
    ],
)
def test_bad_node_specs_raise_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _node(**overrides)


@pytest.mark.parametrize(
    ("role", "width", "signed", "storage", "container"),
    [
        (Role.ACTIVATION, 3, True, Storage.CONTAINER, Container.UINT8),
        (Role.ACTIVATION, 8, False, Storage.PACKED, Container.UINT8),
        (Role.ACTIVATION, 9, True, Storage.CONTAINER, Container.INT16),
        (Role.ACTIVATION, 16, False, Storage.CONTAINER, Container.UINT16),
        (Role.WEIGHT, 3, True, Storage.CONTAINER, Container.INT8),
        (Role.WEIGHT, 3, True, Storage.PACKED, Container.INT4),
        (Role.WEIGHT, 4, False, Storage.PACKED, Container.UINT4),
        (Role.WEIGHT, 2, True, Storage.PACKED, Container.INT2),
        (Role.WEIGHT, 5, True, Storage.PACKED, Container.INT8),
        (Role.WEIGHT, 12, True, Storage.PACKED, Container.INT16),
        (Role.BIAS, 16, True, Storage.CONTAINER, Container.INT32),
    ],
)
def test_choose_container(role, width, signed, storage, container):
    assert choose_container(role, width, signed, storage) is container


def test_signed_activations_use_uint8_with_zero_point_128():
    assert Container.UINT8.zero_point(signed=True) == 128
    assert Container.UINT8.zero_point(signed=False) == 0
    assert Container.UINT16.zero_point(signed=True) == 32768
    assert Container.INT8.zero_point(signed=True) == 0


@pytest.mark.parametrize(
    ("width", "u8s8_exact", "container"),
    [
        (8, True, Container.INT8),
        (8, False, Container.UINT8),  # full-range int8 saturates u8s8 kernels: u8u8 instead
        (7, False, Container.INT8),  # |code| <= 64 never saturates
        (4, False, Container.INT8),
        (12, False, Container.INT16),
    ],
)
def test_eight_bit_weights_go_to_uint8_where_u8s8_saturates(width, u8s8_exact, container):
    chosen = choose_container(
        Role.WEIGHT, width, True, Storage.CONTAINER, u8s8_exact=u8s8_exact
    )
    assert chosen is container
    # activations and biases never change with the target
    assert choose_container(Role.ACTIVATION, 8, True, Storage.CONTAINER, u8s8_exact=u8s8_exact) \
        is Container.UINT8
    assert choose_container(Role.BIAS, 16, True, Storage.CONTAINER, u8s8_exact=u8s8_exact) \
        is Container.INT32


def test_signed_weights_fit_unsigned_containers_around_the_zero_point():
    spec = TensorSpec(4, container="uint8")
    assert resolve_container(spec, Role.WEIGHT, True, Storage.CONTAINER) is Container.UINT8
    with pytest.raises(ConfigError, match="cannot hold a 8-bit unsigned"):
        resolve_container(TensorSpec(8, container="int8"), Role.WEIGHT, False, Storage.CONTAINER)
