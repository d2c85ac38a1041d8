"""User models: a ``package.module:function`` factory returning a torch module, plus weights."""

from __future__ import annotations

import importlib
from pathlib import Path

from onnxopt.errors import UsageError


def load_factory(spec: str, weights: Path | None = None):
    """Call the factory named ``spec`` and load ``weights`` (a state dict) into its module.

    Weights are read with ``weights_only=True`` (no code runs from the file).

    Raises:
        UsageError: When ``spec`` is malformed, cannot be imported, or returns no module.
    """
    import torch

    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise UsageError(f"factory {spec!r} must look like 'package.module:function'")
    try:
        factory = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"factory {spec!r} cannot be imported ({exc})") from None
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"factory {spec!r} returned {type(module).__name__}, not a torch module")
    if weights is not None:
        from onnxopt.models.training import load_state_dict

        module.load_state_dict(load_state_dict(weights))
    return module.eval()
