"""CLI test helpers: ``config(body)`` writes a search TOML for the exported digits-mlp."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def config(exported_recipe, tmp_path):
    def write(body: str) -> Path:
        path = tmp_path / "s.toml"
        path.write_text(f'[model]\nonnx = "{exported_recipe("digits-mlp")}"\n{body}')
        return path

    return write
