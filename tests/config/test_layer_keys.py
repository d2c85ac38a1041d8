"""The search's per-layer choices and the quantizer's per-layer config name the same keys.

``LayerChoices`` (a search config) lists, per key of ``LayerQuant`` (a quantization config),
one value or a list of choices. A key added to one and not the other would be silently
unsearchable or refused; these tests tie the two.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from onnxopt.config.quantization import LayerQuant
from onnxopt.config.search import LayerChoices


def test_the_same_keys():
    assert list(LayerChoices.model_fields) == list(LayerQuant.model_fields)


@pytest.mark.parametrize(
    "key", [k for k, f in LayerQuant.model_fields.items() if f.default is not None]
)  # a None default (data_out_width, weight_granularity) means "inherit", not a choice
def test_every_default_is_a_valid_choice_and_means_the_same(key):
    default = LayerQuant.model_fields[key].default
    choices = LayerChoices.model_validate({key: [default]})
    (value,) = choices.items()[key]
    assert LayerQuant.model_validate({key: value}) == LayerQuant()


@pytest.mark.parametrize("key", list(LayerQuant.model_fields))
def test_a_value_the_quantizer_refuses_is_refused_as_a_choice(key):
    bad = "not-a-width" if key != "enabled" else "yes"
    with pytest.raises(ValidationError):
        LayerQuant.model_validate({key: bad})
    with pytest.raises(ValidationError):
        LayerChoices.model_validate({key: [bad]})
