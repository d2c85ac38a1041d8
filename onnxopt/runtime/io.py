"""What a model is fed and which output is scored, for any backend and any number of inputs.

:class:`ModelIO` names a model's inputs and the output its metrics read. :class:`Feeds` turns
a split's features into model-ready arrays for every input, once: one unnamed array feeds the
one input the data must give (flat features are reshaped to it, ``(N, 64)`` -> ``(N, 1, 8,
8)``); named arrays (``{"ids": ..., "mask": ...}``) feed the inputs of those names; an input
the data do not give can be fixed (``[model.inputs.<name>] value = ...``), the same value for
every sample. Integer inputs (token ids, masks) are fed as integers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxopt.data.shaping import adapt_inputs
from onnxopt.errors import DataError, UsageError, did_you_mean
from onnxopt.runtime.base import Session, TensorInfo

if TYPE_CHECKING:  # a graph is read only when one is passed in
    import onnx

FLOAT_INPUTS = frozenset({np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64)})
INT_INPUTS = frozenset({np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.int8),
                        np.dtype(np.uint8), np.dtype(np.bool_)})  # fmt: skip
PROBE_SIZE = 32
"""The size :func:`random_feeds` gives a symbolic dimension other than the batch."""
FIX_HINT = "[model.inputs.{name}] value = ... in the config (or --input-value {name}=...)"


@dataclass(frozen=True)
class ModelIO:
    """The inputs a model is fed and the output its metrics read.

    Attributes:
        inputs: Every input a run must feed, in the model's order.
        output: The scored output (class scores, a regression value, an embedding...).
        fixed_batch: The batch size the model is fixed to, or None when the batch is dynamic.
    """

    inputs: tuple[TensorInfo, ...]
    output: TensorInfo
    fixed_batch: int | None = None

    @property
    def output_name(self) -> str:
        return self.output.name

    @property
    def output_width(self) -> int | None:
        """The static size of the output's last dimension (the class count of a classifier)."""
        last = self.output.shape[-1] if len(self.output.shape) > 1 else None
        return last if isinstance(last, int) else None

    @property
    def input_name(self) -> str:
        """The first input's name (the features input of a one-input model)."""
        return self.inputs[0].name


def graph_inputs(model: onnx.ModelProto) -> tuple[TensorInfo, ...]:
    """The inputs of an ONNX graph that are not initializers, as :class:`TensorInfo`."""
    import onnx

    inits = {t.name for t in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        t = value.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
        )
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else None
        name = onnx.TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "?"
        out.append(TensorInfo(value.name, dims, dtype, f"tensor({name})"))
    return tuple(out)


def random_feeds(
    model: onnx.ModelProto, rows: int, *, seed: int = 0, like: onnx.ModelProto | None = None
) -> dict[str, np.ndarray]:
    """Random feeds for every input of a graph, for checks that compare two models' outputs.

    Args:
        model: The graph.
        rows: The batch size (a fixed batch dimension is kept as the model states it).
        seed: The random seed.
        like: A second graph (the same model repaired) whose static sizes fill the symbolic
            dimensions of ``model``'s inputs; others are ``rows`` on the first axis and
            :data:`PROBE_SIZE` elsewhere (a spatial or sequence axis that survives poolings).

    Float inputs get standard normal values, integer and boolean inputs 0 or 1 (valid token
    ids and masks for any table).
    """
    other = {i.name: i.shape for i in graph_inputs(like)} if like is not None else {}
    return random_session_feeds(graph_inputs(model), rows, seed=seed, hints=other)


def random_session_feeds(
    inputs: Sequence[TensorInfo],
    rows: int = 1,
    *,
    seed: int = 0,
    hints: Mapping[str, tuple] | None = None,
) -> dict[str, np.ndarray]:
    """:func:`random_feeds` for inputs as a session lists them (``hints``: static sizes for
    symbolic dimensions, by input name)."""
    rng, hints = np.random.default_rng(seed), hints or {}
    out = {}
    for info in inputs:
        hint = hints.get(info.name, ())
        dims = []
        for i, d in enumerate(info.shape):
            given = hint[i] if i < len(hint) else None
            if isinstance(d, int) and d > 0:
                dims.append(d)
            elif isinstance(given, int) and given > 0:
                dims.append(given)
            else:
                dims.append(PROBE_SIZE if i else rows)
        dtype = info.dtype or np.dtype(np.float32)
        if dtype in INT_INPUTS:
            out[info.name] = rng.integers(0, 2, dims).astype(dtype)
        else:
            out[info.name] = rng.standard_normal(dims).astype(dtype)
    return out


def model_io(
    session: Session, *, output_name: str | None = None, num_classes: int | None = None
) -> ModelIO:
    """The inputs and the scored output of a loaded model.

    Args:
        session: The session to inspect.
        output_name: The scored output; required when several outputs remain ambiguous.
        num_classes: When given, picks the only output whose last dimension has this size.

    Raises:
        UsageError: When the scored output is ambiguous (the message lists the outputs), or
            ``output_name`` is not in the model.
        DataError: When an input has a type onnxopt cannot feed.
    """
    for info in session.inputs:
        if info.dtype not in FLOAT_INPUTS | INT_INPUTS:
            raise DataError(
                f"model input {info.name!r} has type {info.type_name}; onnxopt feeds float "
                "and integer tensors: re-export the model with such an input"
            )
    out = _pick_output(session.outputs, output_name, num_classes)
    batches = {i.shape[0] for i in session.inputs if i.shape and isinstance(i.shape[0], int)}
    fixed = next(iter(batches)) if len(batches) == 1 and next(iter(batches)) > 0 else None
    return ModelIO(tuple(session.inputs), out, fixed)


def _pick_output(
    outputs: Sequence[TensorInfo], name: str | None, num_classes: int | None
) -> TensorInfo:
    if name is not None:
        return _by_name(outputs, name, "output")
    if len(outputs) == 1:
        return outputs[0]
    listed = ", ".join(f"{o.name!r} {list(o.shape)}" for o in outputs)
    how = "name the scored output with --output-name ([model] output = NAME in a config)"
    if num_classes is not None:
        fits = [o for o in outputs if o.shape and o.shape[-1] == num_classes]
        if len(fits) == 1:
            return fits[0]
        raise UsageError(
            f"{len(fits)} of the model's outputs ({listed}) end in {num_classes} classes; {how}"
        )
    raise UsageError(f"model has {len(outputs)} outputs ({listed}); {how}")


def _by_name(args: Sequence[TensorInfo], name: str, kind: str) -> TensorInfo:
    for arg in args:
        if arg.name == name:
            return arg
    hint = did_you_mean(name, [a.name for a in args])
    raise UsageError(f"model has no {kind} named {name!r}; {hint}")


def _batched(info: TensorInfo) -> bool:
    """Inputs with a leading dimension take one row per sample; scalars are per run."""
    return len(info.shape) > 0


class Feeds:
    """Model-ready arrays for every input of one model over the samples of one split.

    Args:
        inputs: The model's inputs.
        x: One feature array, or one array per input name.
        fixed: Values for inputs the data do not give (one sample's value, repeated).

    Raises:
        DataError: Data that do not fit an input, or an input neither the data nor
            ``fixed`` gives (the message names it and both ways to give it).
    """

    def __init__(
        self,
        inputs: Sequence[TensorInfo],
        x: np.ndarray | Mapping[str, np.ndarray],
        fixed: Mapping[str, Any] | None = None,
    ) -> None:
        fixed = dict(fixed or {})
        names = [i.name for i in inputs]
        unknown = sorted(set(fixed) - set(names))
        if unknown:
            raise UsageError(
                f"model.inputs names {unknown[0]!r}, which is not a model input; "
                f"{did_you_mean(unknown[0], names)}"
            )
        given = _data_arrays(inputs, x, fixed)
        rows = {name: len(a) for name, a in given.items()}
        if len(set(rows.values())) > 1:
            listed = ", ".join(f"{name!r} {n:,}" for name, n in rows.items())
            raise DataError(
                f"the data's arrays hold different numbers of samples ({listed}); give every "
                "input one row per sample, or fix an input that is the same for every sample "
                f"with {FIX_HINT.format(name=min(rows, key=rows.__getitem__))}"
            )
        self.n = len(next(iter(given.values()))) if given else 1
        self.arrays: dict[str, np.ndarray] = {}
        self.per_run: dict[str, np.ndarray] = {}
        for info in inputs:
            if info.name in given:
                self.arrays[info.name] = _fit(given[info.name], info)
            elif _batched(info) and not isinstance(info.shape[0], int):
                value = _fixed_value(fixed[info.name], info)
                self.arrays[info.name] = np.broadcast_to(value, (self.n, *value.shape))
            else:  # a scalar, or a fixed leading size ([1, H] state): the same value each run
                self.per_run[info.name] = _fixed_value(fixed[info.name], info, whole=True)

    def __len__(self) -> int:
        return self.n

    def rows(self, index: slice | np.ndarray) -> dict[str, np.ndarray]:
        """The feeds of some samples (per-run inputs as they are)."""
        batch = {k: np.ascontiguousarray(v[index]) for k, v in self.arrays.items()}
        return {**batch, **self.per_run}

    def batch(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """The feeds of samples ``start:stop``."""
        return self.rows(slice(start, stop))

    def subset(self, rows: slice) -> Feeds:
        """The same feeds over the samples ``rows`` selects (views, no copies)."""
        part = object.__new__(Feeds)
        part.arrays = {k: v[rows] for k, v in self.arrays.items()}
        part.per_run = self.per_run
        part.n = len(range(*rows.indices(self.n)))
        return part

    @property
    def sample(self) -> np.ndarray:
        """The first batched input's array (shape and dtype for memory checks)."""
        return next(iter(self.arrays.values()))


def _data_arrays(
    inputs: Sequence[TensorInfo], x: np.ndarray | Mapping[str, np.ndarray], fixed: Mapping
) -> dict[str, np.ndarray]:
    """Which data array feeds which input (one unnamed array: the one input left to feed)."""
    open_inputs = [i.name for i in inputs if i.name not in fixed]
    if isinstance(x, Mapping):
        extra = sorted(set(x) - {i.name for i in inputs})
        if extra:
            raise DataError(
                f"the data hold array {extra[0]!r}, which is no input of the model (inputs: "
                f"{', '.join(repr(i.name) for i in inputs)}); name each array after an input"
            )
        missing = [name for name in open_inputs if name not in x]
        if missing:
            raise DataError(_missing(missing[0], inputs))
        return {name: np.asarray(x[name]) for name in open_inputs}
    if len(open_inputs) == 1:
        return {open_inputs[0]: np.asarray(x)}
    if not open_inputs:
        raise DataError(
            "every model input is fixed by the config, so the data's features feed nothing; "
            "fix fewer inputs"
        )
    listed = ", ".join(repr(n) for n in open_inputs)
    raise DataError(
        f"the model has {len(open_inputs)} inputs to feed ({listed}) but the data hold one "
        "unnamed array: save one array per input in the .npz (np.savez(path, "
        f"{open_inputs[0]}=..., {open_inputs[1]}=..., y=...)), or fix the others with "
        f"{FIX_HINT.format(name=open_inputs[1])}"
    )


def _missing(name: str, inputs: Sequence[TensorInfo]) -> str:
    return (
        f"the data give no array for model input {name!r}: add an array named {name!r} (or "
        f"x_{name}) to the .npz, or fix it with {FIX_HINT.format(name=name)}"
    )


def _fit(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    dtype = info.dtype or np.dtype(np.float32)
    if dtype in INT_INPUTS:
        if x.dtype.kind == "f" and not np.all(np.mod(x, 1) == 0):
            raise DataError(
                f"model input {info.name!r} takes {info.type_name} but the data hold "
                "non-integer values; store integers (token ids, masks)"
            )
        x = x.astype(dtype)
        if _batched(info) and len(info.shape) != x.ndim:
            raise DataError(
                f"data for input {info.name!r} have shape {list(x.shape)}, the input "
                f"{list(info.shape)}; give one row of the input's shape per sample"
            )
        return np.ascontiguousarray(x)
    shape = tuple(d if d is not None else "?" for d in info.shape)
    return adapt_inputs(x, shape, dtype=dtype, input_name=info.name)


def _fixed_value(value: Any, info: TensorInfo, *, whole: bool = False) -> np.ndarray:
    """One sample's value (``whole``: the input's whole declared shape) from a config value."""
    array = np.asarray(value, dtype=info.dtype or np.float32)
    dims = list(info.shape) if whole else list(info.shape[1:])
    want = [d for d in dims if isinstance(d, int)]
    static = len(want) == len(dims)
    if static and array.shape != tuple(want) and array.size == math.prod(want):
        array = array.reshape(want)
    elif static and array.ndim == 0:  # one number for every element of a sample (a mask of 1s)
        array = np.full(want, array, dtype=array.dtype)
    if static and array.shape != tuple(want):
        raise DataError(
            f"model.inputs.{info.name}: value of shape {list(array.shape)} does not fit input "
            f"{info.name!r} ({'its shape' if whole else 'one sample'}: {want}); give "
            f"{'a value of that shape' if whole else 'a value for one sample'} or one number"
        )
    return array
