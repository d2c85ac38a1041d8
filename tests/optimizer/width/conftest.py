"""Width-scaling fixtures: real recipes through the real exporter, untrained (seed 0)."""

from __future__ import annotations

import functools

import onnx
import pytest
from width_models import RECIPE_SHAPES


@pytest.fixture(scope="session")
def untrained_recipe(tmp_path_factory):
    """``untrained_recipe(name)``: the recipe's module (torch seed 0) exported to ONNX.

    The graph is what the exporter really writes (node names, folded constants, pooling,
    the flatten before the head); the weights are untrained, which is all shape and
    widening tests need, and avoids training time.
    """
    import torch

    from onnxopt.exporters.torch_onnx import export_module
    from onnxopt.models.recipes import get_recipe

    folder = tmp_path_factory.mktemp("width-recipes")

    @functools.cache
    def get(name: str) -> onnx.ModelProto:
        in_features, classes, shape = RECIPE_SHAPES[name]
        torch.manual_seed(0)
        module = get_recipe(name).build(in_features, classes)
        return onnx.load(export_module(module, shape, folder / f"{name}.onnx").path)

    return get
