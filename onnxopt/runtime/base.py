"""The runtime interface: a backend loads a model into a session that runs it.

A :class:`Backend` turns a model (in memory, as bytes, or a file) into a :class:`Session`
with fixed threading; a session names its inputs and outputs (:class:`TensorInfo`), runs
feeds, and hands out a zero-argument runner for timing (a backend may preset its tensors
there). Backends register in :data:`onnxopt.runtime.BACKENDS`; every failure a backend meets
becomes one :class:`~onnxopt.errors.OnnxoptError` line.
"""

from __future__ import annotations

import abc
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, TypeAlias, TypeGuard

import numpy as np

from onnxopt.errors import UsageError

if TYPE_CHECKING:  # the runtime layer imports onnx only where it reads a graph
    import onnx

ModelSource: TypeAlias = "onnx.ModelProto | bytes | Path | str"
"""A model in memory, serialized, or the path of a file (external data next to it)."""


def is_model_proto(model: object) -> TypeGuard[onnx.ModelProto]:
    """Whether ``model`` is an ``onnx.ModelProto``, without importing onnx (no such object
    exists before onnx is imported): the probes' child runs models with onnxruntime alone,
    so it starts without onnx's import (1-3 s on a busy 2-core machine)."""
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(model, onnx.ModelProto)


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a loaded model.

    Attributes:
        name: The tensor name.
        shape: Dimensions: ints, symbolic names, or None where unknown.
        dtype: The numpy dtype, or None for non-tensor types (sequences, maps).
        type_name: The type as the runtime spells it (``tensor(float)``), for messages.
    """

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype | None
    type_name: str


class Session(abc.ABC):
    """A model loaded on one backend."""

    backend: ClassVar[str]
    _inputs: tuple[TensorInfo, ...]
    _outputs: tuple[TensorInfo, ...]

    def _describe(self, inputs: Iterable[TensorInfo], outputs: Iterable[TensorInfo]) -> None:
        """Record the inputs and outputs the backend reports (once, at load)."""
        self._inputs, self._outputs = tuple(inputs), tuple(outputs)

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        """The inputs a run must feed (initializers excluded)."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        """The model's outputs."""
        return self._outputs

    @abc.abstractmethod
    def run(
        self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """The named outputs (all when None) for ``feeds``.

        Raises:
            EvaluationError: When the runtime fails (one line).
        """

    def runner(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], object]:
        """A zero-argument call that runs ``feeds`` once, as cheaply as the backend allows
        (for timing; call it inside :meth:`errors`)."""
        return lambda: self.run(feeds)

    def errors(self, action: str) -> AbstractContextManager[None]:
        """A context turning the backend's failures inside it into one-line errors."""
        return nullcontext()


class Backend(abc.ABC):
    """A runtime that loads ONNX models on the CPU.

    Attributes:
        name: The config name (``runtime = "..."``).
        extra: The pip extra that installs it (empty for the core dependency).
    """

    name: ClassVar[str]
    extra: ClassVar[str] = ""

    @abc.abstractmethod
    def load(
        self, model: ModelSource, *, threads: int = 1, graph: onnx.ModelProto | None = None
    ) -> Session:
        """A session with ``threads`` intra-op threads and every graph optimization on.

        ``graph``: the model's proto when ``model`` is its serialized bytes; the native-crash
        check (:mod:`onnxopt.runtime.contained`) then keys on its structure, not its bytes,
        and candidates that differ only in weights or channel counts are checked once.

        Raises:
            ModelLoadError: The file is missing or uses an IR version/opset the runtime lacks.
            EvaluationError: The runtime refuses the model.
            UsageError: A bad thread count.
        """

    @classmethod
    def available(cls) -> bool:
        """Whether the backend's package is installed."""
        return True

    def version(self) -> str:
        """The runtime's version string."""
        return ""


def model_label(model: ModelSource) -> str:
    """How a model is named in messages: its file name, or "the model"."""
    if is_model_proto(model) or isinstance(model, bytes):
        return "the model"
    return Path(model).name


def check_threads(threads: int) -> int:
    """A thread count every backend accepts.

    Raises:
        UsageError: For a non-integer, a bool, or a count outside 1..MAX_THREADS.
    """
    from onnxopt.config.bounds import MAX_THREADS

    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise UsageError(f"threads must be an integer in 1..{MAX_THREADS}, got {threads!r}")
    return threads
