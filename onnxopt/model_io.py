"""Reading and writing ONNX files: clear errors for bad files, atomic writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import onnx

from onnxopt.atomic import atomic_path
from onnxopt.errors import ModelLoadError

_LFS_MAGIC = b"version https://git-lfs.github.com/spec"


def load_onnx(
    path: Path, *, external_data: bool = True, notes: list[str] | None = None
) -> onnx.ModelProto:
    """Load an ONNX model, or raise one clear :class:`ModelLoadError`.

    Besides the parse itself, the model must declare an IR version and opsets the installed
    onnx and onnxruntime read, and its main graph must be complete (every value a node or
    output uses is defined): a file cut at a protobuf field boundary still parses. Sparse
    tensors (sparse initializers, ``Constant`` nodes with a ``sparse_value``) are stored
    dense, so every rewrite and metric sees them as ordinary weights.

    Args:
        path: the ``.onnx`` file.
        external_data: also read tensors stored beside the model (confined to its folder).
        notes: when given, a line for the user is appended per change made (densified
            sparse tensors).
    """
    path = Path(path)
    _check_file(path)
    model = _parse(path)
    check_versions(model, str(path))
    check_complete(model, str(path))
    changed = densify_sparse_tensors(model, str(path))
    if notes is not None:
        notes.extend(changed)
    if external_data:
        _load_external_data(model, path)
    return model


def require_utf8_name(path: Path) -> Path:
    """``path``, if its name is valid UTF-8: onnxruntime opens model files by UTF-8 name only.

    Linux file names are bytes; Python hands undecodable ones over with surrogate escapes,
    which onnxruntime's ``InferenceSession`` refuses with an unrelated-looking TypeError.

    Raises:
        ModelLoadError: Naming the file (undecodable bytes as ``\\xff``) and a name to use.
    """
    raw = os.fsencode(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        shown = raw.decode("utf-8", "backslashreplace")
        name = os.fsencode(Path(path).name).decode("utf-8", "replace").replace("\ufffd", "_")
        raise ModelLoadError(
            f"{shown}: the file name is not valid UTF-8 and onnxruntime opens model files by "
            f"UTF-8 name only; rename it (e.g. to {name!r})"
        ) from None
    return Path(path)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist; check the path")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a directory; pass the .onnx file inside it")
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise ModelLoadError(
            f"{path} cannot be read ({exc.strerror}); check its permissions"
        ) from None
    if not head:
        raise ModelLoadError(f"{path} is empty (0 bytes); re-export or re-download the model")
    if head.startswith(_LFS_MAGIC):
        raise ModelLoadError(f"{path} is a Git LFS pointer, not the model; run 'git lfs pull'")


ORT_FORMAT_MAGIC = b"ORTM"
"""Bytes 4..8 of an onnxruntime ORT-format file (a FlatBuffer file identifier)."""


def _parse(path: Path) -> onnx.ModelProto:
    data = path.read_bytes()
    if data[4:8] == ORT_FORMAT_MAGIC:
        raise ModelLoadError(
            f"{path} is an ORT-format model (onnxruntime's optimized form), which cannot be "
            "rewritten; pass the .onnx it was converted from (onnxopt evaluate reads .ort files)"
        )
    try:
        model = onnx.load_model_from_string(data)  # external tensors are read later, confined
    except Exception:  # protobuf raises DecodeError and friends
        if _looks_like_onnx(data):
            raise ModelLoadError(
                f"{path} is truncated or corrupt ({len(data):,} bytes, protobuf parse failed); "
                "re-export or re-download the model"
            ) from None
        raise ModelLoadError(
            f"{path} is not an ONNX model (protobuf parse failed); pass a .onnx file"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{path} is not an ONNX model (it holds no graph); pass a .onnx file")
    return model


def _looks_like_onnx(data: bytes) -> bool:
    # Every exporter writes ModelProto.ir_version (field 1, a small varint) first: tag 0x08.
    return len(data) > 1 and data[0] == 0x08 and 1 <= data[1] <= 32


def check_versions(model: onnx.ModelProto, source: str) -> None:
    """Refuse IR versions and opsets newer than the installed onnx and onnxruntime read.

    onnxruntime exposes no version limits, but it is released in step with onnx and reads
    up to the same IR version and default-domain opset (onnxruntime 1.32 / onnx 1.23: IR 14,
    opset 28); the quantizer's ``onnx.checker`` pass needs them too.
    """
    fix = "or upgrade onnx and onnxruntime"
    if model.ir_version > onnx.IR_VERSION:
        raise ModelLoadError(
            f"{source} has IR version {model.ir_version} but the installed {_versions()} read up "
            f"to IR version {onnx.IR_VERSION}; re-export with an older exporter or IR version "
            f"(<= {onnx.IR_VERSION}), {fix}"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset <= 0 and any(n.domain in ("", "ai.onnx") for n in model.graph.node):
        raise ModelLoadError(
            f"{source} declares no opset for its ONNX ops (truncated, or a broken exporter); "
            "re-export or re-download the model"
        )
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ModelLoadError(
            f"{source} uses opset {opset} but the installed {_versions()} support up to opset "
            f"{newest}; re-export at opset 21, {fix}"
        )


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ort = version("onnxruntime")
    except PackageNotFoundError:
        ort = "?"
    return f"onnx {onnx.__version__} / onnxruntime {ort}"


def check_complete(model: onnx.ModelProto, source: str) -> None:
    """Refuse a main graph that uses values nothing defines (a cut or damaged file).

    Only the main graph is checked: subgraphs may read their outer scope, and
    ``onnx.checker`` would also refuse models onnxruntime runs (unregistered domains).
    """
    graph = model.graph
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}  # named by its values
    defined |= {out for node in graph.node for out in node.output}
    for node in graph.node:
        missing = next((name for name in node.input if name and name not in defined), None)
        if missing is not None:
            raise ModelLoadError(
                f"{source} is incomplete: node {node.name or node.op_type!r} reads {missing!r}, "
                "which no node, initializer or input defines (truncated or corrupt?); "
                "re-export or re-download the model"
            )
    for output in graph.output:
        if output.name not in defined:
            raise ModelLoadError(
                f"{source} is incomplete: graph output {output.name!r} is computed by no node "
                "(truncated or corrupt?); re-export or re-download the model"
            )


MAX_DENSE_BYTES = 2**31 - 2**20
"""Largest sparse tensor densified (protobuf's 2 GB limit on an in-memory model)."""


def densify_sparse_tensors(model: onnx.ModelProto, source: str) -> list[str]:
    """Store every sparse tensor of ``model`` dense, in place; a note per kind changed.

    Sparse initializers become initializers and ``Constant`` nodes' ``sparse_value`` becomes
    ``value``, in the main graph and every subgraph: onnxruntime reads both forms alike, and
    the rewrites and size metrics then see them as ordinary weights.

    Raises:
        ModelLoadError: A sparse tensor stored in an external file, with indices that do not
            fit its shape, of a non-numeric type, or over :data:`MAX_DENSE_BYTES` dense.
    """
    initializers, constants = [], []
    for graph in _graphs(model.graph):
        for tensor in graph.sparse_initializer:
            graph.initializer.append(_dense(tensor, source))
            initializers.append(tensor.values.name)
        del graph.sparse_initializer[:]
        for node in graph.node:
            for i, attr in enumerate(node.attribute):
                if attr.name == "sparse_value" and node.op_type == "Constant":
                    dense = _dense(attr.sparse_tensor, source)
                    node.attribute[i].CopyFrom(onnx.helper.make_attribute("value", dense))
                    constants.append(node.name or node.output[0])
    notes = []
    if initializers:
        names = ", ".join(repr(n) for n in initializers[:6])
        notes.append(f"{source}: {len(initializers)} sparse initializer(s) ({names}) stored dense")
    if constants:
        names = ", ".join(repr(n) for n in constants[:6])
        notes.append(f"{source}: {len(constants)} sparse Constant node(s) ({names}) stored dense")
    return notes


def _graphs(graph: onnx.GraphProto):
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else attr.graphs:
                yield from _graphs(sub)


def _dense(sparse: onnx.SparseTensorProto, source: str) -> onnx.TensorProto:
    import numpy as np
    from onnx import numpy_helper

    name = sparse.values.name
    what = f"{source}: sparse tensor {name!r}"
    fix = "re-export the model with dense weights"
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in (sparse.values, sparse.indices)):
        raise ModelLoadError(f"{what} keeps its values in an external file; {fix}")
    dims = [int(d) for d in sparse.dims]
    size = int(np.prod(dims, dtype=object)) if dims else 1
    try:
        values, indices = (
            numpy_helper.to_array(sparse.values),
            numpy_helper.to_array(sparse.indices),
        )
    except Exception as exc:  # onnx raises TypeError/ValueError on malformed tensors
        raise ModelLoadError(f"{what} is malformed ({_first_line(exc)}); {fix}") from None
    dense_bytes = size * values.dtype.itemsize
    if min(dims, default=0) < 0 or dense_bytes > MAX_DENSE_BYTES:
        raise ModelLoadError(
            f"{what} of shape {dims} would take {_size(dense_bytes)} dense (limit "
            f"{_size(MAX_DENSE_BYTES)}); {fix}"
        )
    flat = _linear_indices(indices, dims, size, len(values.reshape(-1)))
    if flat is None or values.dtype.kind not in "biuf":
        raise ModelLoadError(
            f"{what} has indices that do not fit its shape {dims} and {values.size} values "
            f"(or a non-numeric type); {fix}"
        )
    dense = np.zeros(size, dtype=values.dtype)
    dense[flat] = values.reshape(-1)
    return numpy_helper.from_array(dense.reshape(dims), name)


def _linear_indices(indices, dims: list[int], size: int, nnz: int):
    """Linear positions of a sparse tensor's values, or None when its indices are malformed.

    ONNX allows ``[NNZ]`` linear indices or ``[NNZ, rank]`` coordinates.
    """
    import numpy as np

    if indices.dtype.kind not in "iu":
        return None
    if indices.ndim == 2 and indices.shape == (nnz, len(dims)) and len(dims) > 0:
        if nnz and ((indices < 0).any() or (indices >= np.array(dims)).any()):
            return None
        return np.ravel_multi_index(tuple(indices.T), dims) if nnz else indices[:, 0]
    if indices.ndim == 1 and len(indices) == nnz:
        inside = not nnz or (indices.min() >= 0 and indices.max() < size)
        return indices if inside else None
    return None


def _size(n: int) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:,} bytes"


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    base = path.resolve().parent
    for tensor in _all_tensors(model):
        if uses_external_data(tensor):
            _check_location(tensor, base, path)
    try:
        load_external_data_for_model(model, str(base))
    except Exception as exc:  # OSError, ValueError, onnx's checker errors on bad entries
        raise ModelLoadError(
            f"{path}: external data could not be read ({_first_line(exc)}); keep the data "
            "file the model was saved with next to it"
        ) from None


def _check_location(tensor: onnx.TensorProto, base: Path, path: Path) -> None:
    location = next((e.value for e in tensor.external_data if e.key == "location"), "")
    try:
        # protobuf hands back bytes for a string field that is not valid UTF-8
        target = base / str(location, "utf-8") if isinstance(location, bytes) else base / location
        target = target.resolve()
        inside, exists = target.is_relative_to(base), target.is_file()
    except (TypeError, ValueError, OSError):
        raise ModelLoadError(
            f"{path}: tensor {tensor.name!r} has an unreadable external data location "
            f"{location!r:.60}; re-export or re-download the model"
        ) from None
    if not inside:
        raise ModelLoadError(
            f"{path}: tensor {tensor.name!r} points outside the model's folder ({location}); "
            "refusing to read it"
        )
    if not exists:
        raise ModelLoadError(
            f"{path}: external data file {location} for tensor {tensor.name!r} is missing; "
            "keep it next to the model"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


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


IN_MEMORY_LIMIT = 2**31 - 2**20
"""Largest serialized model checked in memory (protobuf's 2 GB limit, with a margin)."""

CHECK_ERRORS = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)


def check_full(model: onnx.ModelProto) -> None:
    """``onnx.checker`` full check, strict shape inference included (raises onnx's errors)."""
    if model.ByteSize() < IN_MEMORY_LIMIT:
        onnx.checker.check_model(model, full_check=True)
        return
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    with tempfile.TemporaryDirectory(prefix="onnxopt-check-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save_model(copy, str(path), save_as_external_data=True, location="model.data")
        onnx.checker.check_model(str(path), full_check=True)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
