"""Safe repairs of models other tools wrote: node names, a fixed batch axis, symbolic shapes.

Each repair returns the repaired model (a new proto; the caller's is untouched) and one
note line, or the model as given and no note when there was nothing to repair:

* :func:`name_nodes`: unnamed and duplicate node names get deterministic ones
  (``<OpType>_<index>``): the rewrites address nodes by name;
* :func:`fix_input_shapes`: symbolic input dimensions set to the sizes a user gives
  (``--input-shape NAME=1,3,48,192``), shapes inferred again;
* :func:`free_batch_axis`: a batch dimension fixed at export (often 1, sometimes the
  training-set size) made symbolic, checked by running batch sizes 1 and 7 against the
  original; a graph that bakes the batch size in (a Reshape to a constant shape) is refused
  with the node named.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import onnx

from onnxopt.errors import ModelLoadError, first_line
from onnxopt.runtime.io import random_feeds
from onnxopt.runtime.ort import make_session, native_error, quiet_run_options

BATCH = "batch"
"""The symbolic name a freed batch axis gets."""
CHECK_BATCHES = (1, 7)
_RTOL, _ATOL = 1e-5, 1e-6


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def name_nodes(model: onnx.ModelProto, source: str) -> tuple[onnx.ModelProto, str | None]:
    """Unique, deterministic names for unnamed and duplicate-named nodes of the main graph."""
    seen: set[str] = set()
    renamed = []
    for i, n in enumerate(model.graph.node):
        if not n.name or n.name in seen:
            renamed.append(i)
        else:
            seen.add(n.name)
    if not renamed:
        return model, None
    out = _copy(model)
    used = {n.name for n in out.graph.node if n.name}
    for i in renamed:
        node = out.graph.node[i]
        name, k = f"{node.op_type}_{i}", 1
        while name in used:
            name, k = f"{node.op_type}_{i}_{k}", k + 1
        node.name = name
        used.add(name)
    unnamed = sum(1 for i in renamed if not model.graph.node[i].name)
    what = [f"{unnamed} unnamed"] if unnamed else []
    what += [f"{len(renamed) - unnamed} duplicate-named"] if len(renamed) > unnamed else []
    note = f"{source}: {' and '.join(what)} node(s) named <OpType>_<index>"
    return out, note + " (the rewrites address nodes by name)"


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def _dims(value: onnx.ValueInfoProto) -> list:
    return list(value.type.tensor_type.shape.dim) if value.type.HasField("tensor_type") else []


def fix_input_shapes(
    model: onnx.ModelProto, shapes: Mapping[str, tuple[int | None, ...]], source: str
) -> tuple[onnx.ModelProto, str | None]:
    """Inputs given the static shapes ``shapes`` (name -> full shape, the batch included;
    None leaves that dimension as the model has it).

    Raises:
        ModelLoadError: A name that is not an input, a rank that differs, or a static
            dimension given another size.
    """
    if not shapes:
        return model, None
    out = _copy(model)
    by_name = {i.name: i for i in _inputs(out)}
    for name, shape in shapes.items():
        if name not in by_name:
            raise ModelLoadError(
                f"--input-shape {name}: the model has no input {name!r} "
                f"(inputs: {', '.join(repr(n) for n in by_name)})"
            )
        dims = _dims(by_name[name])
        if len(dims) != len(shape):
            raise ModelLoadError(
                f"--input-shape {name}: {len(shape)} dimensions given, input {name!r} has "
                f"{len(dims)}; give every dimension"
            )
        for axis, (dim, size) in enumerate(zip(dims, shape, strict=True)):
            if size is None:
                continue
            if dim.HasField("dim_value") and dim.dim_value not in (0, size):
                raise ModelLoadError(
                    f"--input-shape {name}: axis {axis} is fixed at {dim.dim_value} in the "
                    f"model, not {size}"
                )
            dim.Clear()
            dim.dim_value = size
    del out.graph.value_info[:]
    out = onnx.shape_inference.infer_shapes(out)
    listed = ", ".join(f"{n}=[{', '.join('?' if d is None else str(d) for d in s)}]"
                       for n, s in shapes.items())  # fmt: skip
    return out, f"{source}: input shapes fixed to {listed}"


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size every input's first dimension is fixed to (None: dynamic or none)."""
    sizes = set()
    for value in _inputs(model):
        dims = _dims(value)
        if not dims:
            return None
        first = dims[0]
        sizes.add(first.dim_value if first.HasField("dim_value") else None)
    size = next(iter(sizes)) if len(sizes) == 1 else None
    return size if size else None


LARGE_BATCH = 64
"""A fixed batch above this is never fed whole to a check (789,444 rows of a training set)."""


def batch_declarations_relaxed(*models: onnx.ModelProto) -> tuple[onnx.ModelProto, ...]:
    """The models as given, or, when they fix a batch above :data:`LARGE_BATCH`, copies whose
    declared inputs and outputs take any batch (for checks that compare them at a few rows;
    nothing is verified here)."""
    batch = fixed_batch(models[0])
    if batch is None or batch <= LARGE_BATCH:
        return models
    return tuple(_declared_free(m, batch) for m in models)


def _declared_free(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    out = _copy(model)
    for value in (*_inputs(out), *out.graph.output):
        dims = _dims(value)
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value == batch:
            dims[0].Clear()
            dims[0].dim_param = BATCH
    del out.graph.value_info[:]  # intermediate shapes carried the fixed batch
    return out


def free_batch_axis(
    model: onnx.ModelProto, source: str, *, keep: bool = False
) -> tuple[onnx.ModelProto, str | None]:
    """The model with its fixed batch axis made symbolic, checked against the original.

    Args:
        model: The model (ONNX default-domain ops onnxruntime runs).
        source: The file name, for messages.
        keep: Keep the batch fixed (``--batch-size-fixed``).

    Raises:
        ModelLoadError: The graph bakes the batch size in, so the freed model computes
            something else; the nodes that hold the size are named.
    """
    batch = fixed_batch(model)
    if batch is None or keep:
        return model, None
    freed = _declared_free(model, batch)
    _check_freed(model, freed, batch, source)
    sizes = " and ".join(map(str, CHECK_BATCHES))
    how = (
        f"batch sizes {sizes} checked against the original"
        if batch <= LARGE_BATCH
        else f"each row's outputs checked the same at batch sizes {sizes}"
    )
    note = f"{source}: batch axis freed (was fixed at {batch:,}; {how}; "
    return freed, note + "--batch-size-fixed keeps it)"


def _check_freed(original: onnx.ModelProto, freed: onnx.ModelProto, batch: int, source: str):
    """Row ``i`` of a batch must not depend on the other rows, nor on the batch size.

    The original runs only at its fixed batch size: when that is small, the freed model at
    1 and 7 rows is compared with it row by row (the first rows of one original batch); when
    it is large, each freed batch is compared with the freed model's own single-row runs.
    """
    rows = max(CHECK_BATCHES)
    small = batch <= LARGE_BATCH
    sample = random_feeds(freed, max(batch, rows) if small else rows)
    try:
        session = make_session(freed)
        options = quiet_run_options()
        per_row = [session.run(None, {k: v[i : i + 1] for k, v in sample.items()}, options)
                   for i in range(rows)]  # fmt: skip
        for n in CHECK_BATCHES:
            got = session.run(None, {k: v[:n] for k, v in sample.items()}, options)
            for out_index, array in enumerate(got):
                want = np.concatenate([r[out_index] for r in per_row[:n]])
                close = np.allclose(array, want, rtol=_RTOL, atol=_ATOL)
                if array.shape != want.shape or not close:
                    raise _baked(original, batch, source, f"at batch {n} the outputs change")
        if small:
            reference = make_session(original).run(
                None, {k: v[:batch] for k, v in sample.items()}, options
            )
            for out_index, want in enumerate(reference):
                got = np.concatenate([r[out_index] for r in per_row[: min(batch, rows)]])
                if not np.allclose(got, want[: len(got)], rtol=_RTOL, atol=_ATOL):
                    raise _baked(original, batch, source, "the outputs differ from the original")
    except ModelLoadError:
        raise
    except Exception as exc:  # onnxruntime: a shape that only fits the fixed batch
        native = native_error(exc)
        node = re.search(r"Name:'([^']*)'", str(native))
        why = f"onnxruntime fails in node {node.group(1)!r}" if node else first_line(native, 200)
        raise _baked(original, batch, source, why) from None


def _baked(model: onnx.ModelProto, batch: int, source: str, why: str) -> ModelLoadError:
    holders = _batch_holders(model, batch)
    where = f" ({', '.join(holders)} holds the batch size {batch})" if holders else ""
    return ModelLoadError(
        f"{source}: the batch axis (fixed at {batch:,}) cannot be freed: {why}{where}; "
        "re-export the model with a dynamic batch (reshape to (x.shape[0], -1), not a "
        "constant), or keep it with --batch-size-fixed"
    )


def _batch_holders(model: onnx.ModelProto, batch: int) -> list[str]:
    """Nodes whose constant shape input starts with the fixed batch size."""
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.dims:
            constants[node.output[0]] = onnx.numpy_helper.to_array(node.attribute[0].t)
    names = []
    for node in model.graph.node:
        if node.op_type in ("Reshape", "Expand", "Tile", "ConstantOfShape") and len(node.input) > 1:
            shape = constants.get(node.input[1])
            if shape is not None and shape.ndim == 1 and len(shape) and int(shape[0]) == batch:
                names.append(f"{node.op_type} node {node.name or node.output[0]!r}")
    return names
