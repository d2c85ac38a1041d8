"""Typed, frozen config models loaded from TOML; unknown keys are errors."""

from onnxopt.config.base import StrictModel, load_toml, validate

__all__ = ["StrictModel", "load_toml", "validate"]
