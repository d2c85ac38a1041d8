"""The versions of the packages a result depends on (manifests and deployment cards)."""

from __future__ import annotations

from importlib import metadata

PACKAGES = (
    "onnxopt", "onnx", "onnxruntime", "onnx-ir", "optuna", "numpy", "torch", "pydantic",
    "openvino",
)  # fmt: skip


def package_versions() -> dict[str, str | None]:
    """Installed version per package (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
