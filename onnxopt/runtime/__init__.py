"""The runtime boundary: backends that load and run models, and what the CPU executes.

Backends are registered in :data:`BACKENDS` (the single list of runtime names: configs,
``--runtime`` and reports read it); :func:`get_backend` returns one, or says which install
line adds it.
"""

from __future__ import annotations

from collections.abc import Mapping

from onnxopt.errors import UsageError, did_you_mean
from onnxopt.runtime.base import Backend, ModelSource, Session, TensorInfo
from onnxopt.runtime.openvino import OpenVinoBackend
from onnxopt.runtime.ort import OrtBackend

BACKENDS: Mapping[str, type[Backend]] = {b.name: b for b in (OrtBackend, OpenVinoBackend)}
"""Every runtime by its config name."""

DEFAULT_RUNTIME = OrtBackend.name


def get_backend(name: str = DEFAULT_RUNTIME) -> Backend:
    """The backend called ``name``.

    Raises:
        UsageError: For an unknown name (the closest listed), or a backend whose optional
            package is not installed (the install line named).
    """
    if name not in BACKENDS:
        raise UsageError(f"unknown runtime {name!r}; {did_you_mean(name, BACKENDS)}")
    backend = BACKENDS[name]
    if not backend.available():
        install = f"pip install -e '.[{backend.extra}]'"
        raise UsageError(f"runtime {name!r} is not installed; install it with: {install}")
    return backend()


__all__ = [
    "BACKENDS",
    "DEFAULT_RUNTIME",
    "Backend",
    "ModelSource",
    "Session",
    "TensorInfo",
    "get_backend",
]
