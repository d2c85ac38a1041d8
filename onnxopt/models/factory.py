"""User models: a ``package.module:function`` factory returning a torch module, plus weights.

A factory is code: naming one (``--factory``, ``model.factory``) runs it with the user's
rights, so a config that names one must be trusted like a script. What onnxopt checks is
that it returns a torch ``nn.Module`` (anything else, an exception or an attempt to exit is
one line); it cannot stop a factory that kills the process (``os:abort``). The weights are
data, read with ``weights_only=True``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from onnxopt.errors import ModelLoadError, UsageError

_CONTRACT = "it must take no arguments and return a torch nn.Module"


def load_factory(spec: str, weights: Path | None = None):
    """Call the factory named ``spec`` and load ``weights`` (a state dict) into its module.

    Weights are read with ``weights_only=True`` (no code runs from the file).

    Raises:
        UsageError: When ``spec`` is malformed or cannot be imported, or the factory raises,
            exits or returns something other than a torch module.
        ModelLoadError: When the weights file is unreadable or does not fit the module.
    """
    import torch

    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise UsageError(f"factory {spec!r} must look like 'package.module:function'")
    try:
        factory = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"factory {spec!r} cannot be imported ({exc})") from None
    module = _call(factory, spec)
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"factory {spec!r} returned {type(module).__name__}; {_CONTRACT}")
    if weights is not None:
        from onnxopt.models.training import load_state_dict

        state = load_state_dict(weights)
        try:
            module.load_state_dict(state)
        except (RuntimeError, TypeError, ValueError) as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:2])[:300]
            raise ModelLoadError(
                f"{weights} does not fit the module of factory {spec!r} ({detail}); "
                "save the weights of the module this factory builds"
            ) from None
    return module.eval()


def _call(factory, spec: str):
    """``factory()``, with its exceptions and exits as one UsageError (Ctrl-C still stops)."""
    try:
        return factory()
    except SystemExit as exc:
        raise UsageError(
            f"factory {spec!r} exited (SystemExit {exc.code!r}) instead of returning; {_CONTRACT}"
        ) from None
    except Exception as exc:  # a factory is the user's code: any error is theirs to fix
        text = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
        raise UsageError(f"factory {spec!r} raised {detail}; {_CONTRACT}") from None
