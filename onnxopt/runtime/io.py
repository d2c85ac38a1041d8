"""Which input a model is fed and which output holds what it predicts (any backend)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onnxopt.errors import DataError, ModelLoadError, UsageError, did_you_mean
from onnxopt.runtime.base import Session, TensorInfo

FLOAT_INPUTS = frozenset({np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.float64)})
"""The model input types evaluation can feed."""


@dataclass(frozen=True)
class ClassifierIO:
    """The one input a classifier is fed and the output holding its class scores.

    Attributes:
        input_name: Name of the features input.
        input_shape: Input shape with the batch dimension symbolic (a string); other
            dimensions are ints or symbolic names.
        input_dtype: numpy dtype the input expects (float32, float16 or float64).
        output_name: Name of the class-score output.
        num_classes: Static size of the output's last dimension, or None when symbolic.
        fixed_batch: The batch size the model is fixed to, or None when the batch is dynamic.
    """

    input_name: str
    input_shape: tuple[int | str, ...]
    input_dtype: np.dtype
    output_name: str
    num_classes: int | None
    fixed_batch: int | None = None


def classifier_io(
    session: Session,
    *,
    input_name: str | None = None,
    output_name: str | None = None,
    num_classes: int | None = None,
) -> ClassifierIO:
    """Find the features input and the class-score output of a classifier session.

    Args:
        session: The session to inspect.
        input_name: The features input; required when the model has several inputs.
        output_name: The class-score output; required when several outputs remain ambiguous.
        num_classes: When given, picks the only output whose last dimension has this size.

    Raises:
        ModelLoadError: When the model has several inputs and ``input_name`` is not given.
        UsageError: When the class-score output is ambiguous (the message lists the outputs),
            or ``input_name`` / ``output_name`` is not in the model.
        DataError: When the input is not a float tensor with a batch dimension.
    """
    node = _pick_input(session.inputs, input_name)
    if node.dtype not in FLOAT_INPUTS:
        raise DataError(
            f"model input {node.name!r} has type {node.type_name}; evaluation feeds float "
            "inputs (tensor(float), tensor(float16), tensor(double)): re-export the model with "
            "a float input"
        )
    shape = list(node.shape)
    if not shape:
        raise DataError(
            f"model input {node.name!r} has no batch dimension (shape {shape}); re-export it "
            "with the batch as its first dimension"
        )
    batch = shape[0]
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    shape[0] = batch if isinstance(batch, str) and batch else "batch"
    out = _pick_output(session.outputs, output_name, num_classes)
    last = out.shape[-1] if out.shape else None
    return ClassifierIO(
        input_name=node.name,
        input_shape=tuple(d if d is not None else "?" for d in shape),
        input_dtype=node.dtype,
        output_name=out.name,
        num_classes=last if isinstance(last, int) else None,
        fixed_batch=fixed,
    )


def _pick_input(inputs: Sequence[TensorInfo], name: str | None) -> TensorInfo:
    if name is not None:
        return _by_name(inputs, name, "input")
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise ModelLoadError(
            f"model has {len(inputs)} inputs ({names}); onnxopt feeds a classifier one tensor "
            "of features: re-export the model with a single input (input_name picks one "
            "when the others have defaults)"
        )
    return inputs[0]


def _pick_output(
    outputs: Sequence[TensorInfo], name: str | None, num_classes: int | None
) -> TensorInfo:
    if name is not None:
        return _by_name(outputs, name, "output")
    if len(outputs) == 1:
        return outputs[0]
    listed = ", ".join(f"{o.name!r} {list(o.shape)}" for o in outputs)
    how = "name the class-score output with --output-name (output_name in Python)"
    if num_classes is not None:
        fits = [o for o in outputs if o.shape and o.shape[-1] == num_classes]
        if len(fits) == 1:
            return fits[0]
        raise UsageError(
            f"{len(fits)} of the model's outputs ({listed}) end in {num_classes} classes; {how}"
        )
    raise UsageError(f"model has {len(outputs)} outputs ({listed}); {how} or give num_classes")


def _by_name(args: Sequence[TensorInfo], name: str, kind: str) -> TensorInfo:
    for arg in args:
        if arg.name == name:
            return arg
    hint = did_you_mean(name, [a.name for a in args])
    raise UsageError(f"model has no {kind} named {name!r}; {hint}")
