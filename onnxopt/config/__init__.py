"""Typed, frozen config models loaded from TOML; unknown keys are errors.

The names below load pydantic on first use only: the CLI imports :mod:`onnxopt.config.bounds`
for its option ranges on every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from onnxopt.config.base import StrictModel, load_toml, validate

__all__ = ["StrictModel", "load_toml", "validate"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("onnxopt.config.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
