"""ONNX -> ORT format, as onnxruntime's own converter writes it, plus its operator config.

``python -m onnxruntime.tools.convert_onnx_models_to_ort`` ("Fixed" style, the default for
the CPU provider) saves the graph after every optimization except the NCHWc layout
transformer (which would tie the file to AVX-512 x86): the fused QGemm / QLinearConv /
QLinearMatMul kernels are baked into the file, because a full onnxruntime build does not
optimize an ORT-format model again when it loads it. :func:`save_ort_format` does the
same with onnxopt's session settings and writes the converter's
``required_operators_and_types.config`` beside it, the input of a reduced build
(``build.py --include_ops_by_config``).

What the format cannot hold: onnxruntime 1.32's ORT format has no 2- or 4-bit tensor type
(a file with an INT4 initializer fails to load: "Unsupported tensor data type"), so packed
weights are stored as the int8 the kernels read; the packed ``.onnx`` stays the smaller
file. The format also adds a fixed few kilobytes (kernel type information).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from onnxopt.atomic import atomic_path
from onnxopt.errors import ExportError
from onnxopt.runtime.ort import make_session

PORTABLE_EXCLUDED = ("NchwcTransformer",)
"""Transformers the converter leaves out so the file runs on any CPU (NCHWc is AVX-512)."""
CONFIG_SUFFIX = ".required_operators_and_types.config"


@dataclass(frozen=True)
class OrtArtifacts:
    """An ORT-format model and the operator/type config of a reduced build that runs it."""

    model: Path
    operators: Path


def save_ort_format(onnx_path: Path, ort_path: Path) -> OrtArtifacts:
    """Write ``ort_path`` (fully optimized, portable) and ``<stem>.required_operators_and_types.
    config`` next to it, both atomically.

    Raises:
        ExportError: onnxruntime could not load or convert the model.
    """
    onnx_path, ort_path = Path(onnx_path), Path(ort_path)
    config_path = ort_path.with_name(ort_path.stem + CONFIG_SUFFIX)
    try:
        str(ort_path).encode("utf-8")
    except UnicodeEncodeError:
        # onnxruntime and its config generator take paths as UTF-8 text: write both files
        # in a folder with a plain name, then copy their bytes to the real names
        with tempfile.TemporaryDirectory(prefix="onnxopt-ort-") as folder:
            made = _save(onnx_path, Path(folder) / "model.ort")
            with atomic_path(ort_path) as tmp:
                shutil.copyfile(made.model, tmp)
            with atomic_path(config_path) as tmp:
                shown = str(ort_path).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                text = made.operators.read_text().replace(str(made.model), shown)
                tmp.write_text(text)
        return OrtArtifacts(ort_path, config_path)
    return _save(onnx_path, ort_path)


def _save(onnx_path: Path, ort_path: Path) -> OrtArtifacts:
    from onnxruntime.tools.ort_format_model import create_config_from_models

    config_path = ort_path.with_name(ort_path.stem + CONFIG_SUFFIX)
    with atomic_path(ort_path) as tmp:
        make_session(
            onnx_path, optimization="all", optimized_model_path=tmp,
            config={"session.save_model_format": "ORT", "session.qdqisint8allowed": "0"},
            disabled_optimizers=PORTABLE_EXCLUDED, error=ExportError,
        )  # fmt: skip
    # the converter's config generator reads the finished file (its header names it); it
    # logs every file at INFO level on a handler of its own
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    with atomic_path(config_path) as cfg, contextlib.redirect_stdout(io.StringIO()):
        create_config_from_models([ort_path], Path(cfg), enable_type_reduction=True)
    return OrtArtifacts(ort_path, config_path)
