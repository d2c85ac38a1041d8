"""Search test helpers: a digits-mlp config (ONNX model from the session fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

QUANT_18 = """
[search.quantization.by_type.linear]
data_in_width = [4, 8]
weight_width = [2, 4, 8]
bias_width = [2, 4, 8]
weight_frac_width = ["NA"]
data_in_frac_width = ["NA"]
bias_frac_width = ["NA"]
"""


@pytest.fixture
def write_config(exported_recipe, tmp_path):
    """``write_config(body)`` writes a search TOML for digits-mlp and returns its path."""
    model = exported_recipe("digits-mlp")

    def write(body: str, name: str = "search.toml") -> Path:
        path = tmp_path / name
        path.write_text(f'[model]\nonnx = "{model}"\n[data]\ndataset = "digits"\n{body}')
        return path

    return write
