"""Weights files are data: what they say about the model (recipe, input shape, class count)
is checked before anything is built from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reliability_helpers import assert_one_line

from onnxopt.models.training import save_weights


@pytest.fixture(scope="module")
def payload(trained_recipe, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("w") / "ok.pt"
    save_weights(trained_recipe("digits-mlp"), path)
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize(
    ("key", "value", "fragments"),
    [
        ("num_classes", 2**40, ("num_classes", f"{2**40}", "65,536")),
        ("num_classes", "ten", ("num_classes", "'ten'")),
        ("input_shape", ["x"], ("input_shape", "['x']")),
        ("input_shape", [2**20, 2**20], ("input_shape", "features")),
        ("input_shape", 64, ("input_shape", "64")),
    ],
)
def test_weights_metadata_is_checked_before_building(
    tmp_path: Path, cli, payload, key, value, fragments
) -> None:
    torch.save({**payload, key: value}, tmp_path / "w.pt")
    assert_one_line(cli("export", "--weights", "w.pt", "-o", "m.onnx"), "w.pt", *fragments)
