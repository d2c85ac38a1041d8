"""Reading and writing ONNX files: clear errors for bad files, atomic writes."""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxopt.atomic import atomic_path
from onnxopt.errors import ModelLoadError

_LFS_MAGIC = b"version https://git-lfs.github.com/spec"


def load_onnx(path: Path, *, external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX model, or raise one clear :class:`ModelLoadError`.

    Args:
        path: the ``.onnx`` file.
        external_data: also read tensors stored beside the model (confined to its folder).
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist; check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory; pass the .onnx file inside it")
    head = path.read_bytes()[:64] if path.stat().st_size else b""
    if not head:
        raise ModelLoadError(f"{path} is empty (0 bytes); re-export or re-download the model")
    if head.startswith(_LFS_MAGIC):
        raise ModelLoadError(f"{path} is a Git LFS pointer, not the model; run 'git lfs pull'")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError and friends
        raise ModelLoadError(
            f"{path} is not an ONNX model (protobuf parse failed); pass a .onnx file"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{path} is not an ONNX model (it holds no graph); pass a .onnx file")
    if external_data:
        _load_external_data(model, path)
    return model


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    base = path.resolve().parent
    for tensor in _all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (base / location).resolve()
        if not target.is_relative_to(base):
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} points outside the model's folder ({location}); "
                "refusing to read it"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{path}: external data file {location} for tensor {tensor.name!r} is missing; "
                "keep it next to the model"
            )
    try:
        load_external_data_for_model(model, str(base))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: external data could not be read ({exc})") from None


def _all_tensors(model: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def save_onnx(model: onnx.ModelProto, path: Path, *, external_data: bool = False) -> Path:
    """Write a model atomically: to a temporary file in the same folder, then rename.

    Args:
        model: the model to write.
        path: where it goes.
        external_data: store tensors in ``<name>.data`` beside the model (needed past 2 GB).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if external_data:
            # the data file is written under its final name; the model file is renamed last,
            # so a crash never leaves a complete-looking model without its data
            onnx.save_model(
                model,
                str(tmp),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=path.name + ".data",
                size_threshold=1024,
            )
        else:
            onnx.save_model(model, str(tmp))
    return path
