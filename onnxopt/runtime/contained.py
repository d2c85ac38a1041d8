"""Native crashes contained: a model is opened and run once in a child process first.

A graph that onnxruntime (or OpenVINO) cannot handle sometimes kills the process instead
of raising (a folded recurrent model made onnxruntime segfault): the command would die with
no message, a search with it, its finished trials safe in storage but no summary. Before a
session is created in this process, :func:`check_loads` opens the same model with the same
options in a child (multiprocessing's ``forkserver``: a clean process, not a fork of this
multi-threaded one) and runs it once on random inputs. A child killed by a signal becomes a
:class:`NativeCrash` (an :class:`~onnxopt.errors.EvaluationError`: exit 1, one line naming
the model and the stage; in a search, a FAIL trial with that reason). Any other outcome
lets the caller go on: a Python-level refusal is raised again, with onnxopt's message, when
the caller opens the model itself.

A model's structure (ops, attributes, tensor types and ranks; not the weight values, and
of a dim only its name or whether it is 0, 1 or more) is checked once per process, and
once for the workers of one search (:func:`share_checks`): the candidates that differ only
in weights or in channel counts (a width search) are not run twice. The child inherits
nothing from this process: it receives the model bytes and the session settings of each
probe over a pipe, and it is kept for the next probe (a new child would cost an
interpreter start per candidate) until a probe kills or hangs it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onnxopt.errors import EvaluationError
from onnxopt.runtime.base import is_model_proto

if TYPE_CHECKING:  # the child imports neither onnx nor the runtime before a probe
    import onnx

    from onnxopt.runtime.base import Session

TIMEOUT_SECONDS = 600.0
"""A child that neither finishes nor crashes in this time is stopped and reported."""

_STAGE: contextvars.ContextVar[str] = contextvars.ContextVar("stage", default="")
_CHECKED: set[str] = set()
_SHARED: Path | None = None
_IN_CHILD = False


class NativeCrash(EvaluationError):
    """The runtime killed the process that opened or ran a model (a native crash)."""


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Name what is being done, for crash messages ("calibrating", "measuring trial 3")."""
    token = _STAGE.set(name)
    try:
        yield
    finally:
        _STAGE.reset(token)


def structure_key(model: onnx.ModelProto | bytes | Path | str, settings: Any) -> str:
    """What decides which kernels run: ops, attributes, tensor types and shapes, settings.

    Weight values are left out (the kernels do not depend on them; the model's metadata,
    which holds the bit width of each quantized tensor, is kept), and of a dim (of an
    initializer, a graph input or output) only its name or whether it is 0, 1 or more
    (empty and broadcast dims choose other code paths; channel counts do not); a file is
    keyed by its path, size and modification time.
    """
    digest = hashlib.sha256(repr(settings).encode())
    if isinstance(model, bytes):
        digest.update(hashlib.sha256(model).digest())
    elif is_model_proto(model):
        _hash_graph(digest, model.graph)
        for prop in model.metadata_props:  # onnxopt's bit widths: other integer ranges
            digest.update(f"{prop.key}={prop.value};".encode())
        for opset in model.opset_import:
            digest.update(f"{opset.domain}:{opset.version};".encode())
    else:
        stat = Path(os.fspath(model)).stat()
        digest.update(f"{os.fspath(model)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _dims(dims) -> list[int]:
    """0, 1 or 2 for "more" per dim: what the kernels branch on, not the channel count."""
    return [min(d, 2) for d in dims]


def _value_key(value: onnx.ValueInfoProto) -> str:
    """A graph input/output: its name, type and shape, named dims kept, sizes as ``_dims``."""
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return f"{value.name}:{value.type.SerializeToString().hex()};"
    tensor = value.type.tensor_type
    dims = [d.dim_param if d.HasField("dim_param") else _dims([d.dim_value])[0]
            if d.HasField("dim_value") else "?" for d in tensor.shape.dim]  # fmt: skip
    shape = dims if tensor.HasField("shape") else None
    return f"{value.name}:{tensor.elem_type}:{shape};"


def _hash_graph(digest, graph: onnx.GraphProto) -> None:
    # an initializer is keyed where it is used, by type and dims, not by name: a quantizer
    # that shares equal scales between nodes changes the names, not the kernels
    import onnx  # (loaded already: the graph is one)

    constants = {t.name: f"<{t.data_type}:{_dims(t.dims)}>" for t in graph.initializer}
    for value in (*graph.input, *graph.output):
        digest.update(_value_key(value).encode())
    for node in graph.node:
        inputs = [constants.get(name, name) for name in node.input]
        digest.update(f"{node.domain}:{node.op_type}:{inputs}>{list(node.output)}".encode())
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _hash_graph(digest, attr.g)
            elif attr.type == onnx.AttributeProto.TENSOR:
                digest.update(f"{attr.name}:{attr.t.data_type}:{list(attr.t.dims)}".encode())
                if len(attr.t.raw_data) <= 64:  # shapes and axes, not weights
                    digest.update(attr.t.raw_data)
            else:
                digest.update(attr.SerializeToString())


def check_loads(
    model: onnx.ModelProto | bytes | Path | str,
    settings: dict[str, Any],
    *,
    label: str,
    target: Callable[..., Any] | None = None,
    structure: onnx.ModelProto | None = None,
) -> None:
    """Open and run ``model`` once in a child process; raise if the child crashed.

    Args:
        model: The model (a proto is sent serialized; a file by its path).
        structure: The proto of ``model`` when that is its bytes: the check is then done
            once per structure (:func:`structure_key`), not once per distinct bytes.
        settings: Keyword arguments of the session (threads, optimization level...).
        label: How the model is named in messages.
        target: The child's work (default :func:`open_and_run`); tests swap it.

    Raises:
        NativeCrash: The child was killed by a signal or did not finish in time.
    """
    if _IN_CHILD:
        return
    key = structure_key(model if structure is None else structure, settings)
    if key in _CHECKED or key in _shared_keys():
        _CHECKED.add(key)
        return
    payload = model.SerializeToString() if is_model_proto(model) else model
    code = run_contained(target or PROBE, payload, settings)
    if code is not None and code < 0:
        raise NativeCrash(_crash_message(label, -code))
    if code is None:
        raise NativeCrash(
            f"{label}: the runtime neither finished nor crashed opening and running the model "
            f"once within {TIMEOUT_SECONDS:.0f} s{_where()}; check the model in onnxruntime "
            "directly"
        )
    _CHECKED.add(key)
    if _SHARED is not None:
        with contextlib.suppress(OSError):
            _SHARED.parent.mkdir(parents=True, exist_ok=True)
            with open(_SHARED, "a") as shared:
                shared.write(key + "\n")  # one short append: whole lines for the readers


def share_checks(folder: Path | None) -> None:
    """Share the structures checked with the other processes of this machine and runtime
    that share ``folder`` (the workers of one search): a structure one process checked is
    not checked again by the others, so a new worker starts no child for the base model and
    the candidates already seen. None stops sharing.

    The file is a cache: a lost or unreadable file only means checking again.
    """
    global _SHARED
    if folder is None:
        _SHARED = None
        return
    import platform

    from onnxopt.runtime.ort import ort_version

    host = hashlib.sha256(f"{platform.node()}:{ort_version()}".encode()).hexdigest()[:16]
    _SHARED = Path(folder) / f"checked-{host}.keys"  # made by the first write


def _shared_keys() -> set[str]:
    if _SHARED is None:
        return set()
    try:
        return set(_SHARED.read_text().split())
    except OSError:
        return set()


def run_contained(fn: Callable[..., Any], *args: Any) -> int | None:
    """Run ``fn(*args)`` in a clean child process (one kept for the next call while it lives).

    Returns:
        0 when ``fn`` returned, 1 when it raised, ``-signal`` when a signal killed the child;
        None when it was stopped after :data:`TIMEOUT_SECONDS`.
    """
    return _prober().run(fn, args)


class _Prober:
    """One clean child that runs probes sent over a pipe, one at a time.

    A search probes every new candidate structure: starting a child for each costs an
    interpreter start and onnxruntime's import (a tenth of a second to seconds on a busy
    machine), so the child stays up between probes. A probe that kills the child (a native
    crash) or hangs takes only the child with it; the next probe starts a new one.
    """

    def __init__(self) -> None:
        parent, child = _context().Pipe()
        self.process = _context().Process(target=_serve, args=(child,), daemon=True)
        with _callers_main_hidden():
            self.process.start()
        child.close()
        self.conn = parent
        self.pid = os.getpid()

    def run(self, fn: Callable[..., Any], args: tuple) -> int | None:
        global _PROBER
        try:
            self.conn.send((fn, args))
            if self.conn.poll(TIMEOUT_SECONDS):
                return int(self.conn.recv())
        except (EOFError, OSError):  # the child died: a signal killed it
            _PROBER = None
            self.process.join()
            return self.process.exitcode
        _PROBER = None
        self.process.kill()
        self.process.join()
        return None


_PROBER: _Prober | None = None
_PROBER_LOCK = threading.Lock()


def _prober() -> _Prober:
    global _PROBER
    with _PROBER_LOCK:  # one child, also when warm_up's thread is starting it
        if _PROBER is None or _PROBER.pid != os.getpid() or not _PROBER.process.is_alive():
            _PROBER = _Prober()
        return _PROBER


_MAIN_LOCK = threading.Lock()
_WARMED: int | None = None
"""The process that started its probes' child in the background (once is enough)."""


@contextlib.contextmanager
def _callers_main_hidden() -> Iterator[None]:
    """Start the child without the caller's ``__main__``: multiprocessing would otherwise run
    the caller's script again in the child (its top level, when it has no main guard, and a
    script that calls onnxopt there would fail with "bootstrapping phase"); the child needs
    nothing of it, since its target lives in this module."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _MAIN_LOCK:
        names = [key for key in ("__file__", "__spec__") if key in main.__dict__]
        saved: dict[str, Any] = {key: main.__dict__[key] for key in names}
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


def warm_up() -> None:
    """Start the probes' child now, in the background: a clean interpreter importing
    onnxruntime (not onnx: a fifth of a second rather than 1-3 s on a busy 2-core machine)
    gets ready while the caller prepares, not when the first probe (a search worker's first
    trial) waits for it."""
    global _WARMED
    if _IN_CHILD or _WARMED == os.getpid():
        return
    _WARMED = os.getpid()
    context = _context()
    if context.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with _callers_main_hidden():
            forkserver.ensure_running()  # the server imports on its own
    # the child forks from the server once it has imported: a thread waits for that
    threading.Thread(target=_start_child, name="onnxopt-probe-warm-up", daemon=True).start()


def _start_child() -> None:
    with contextlib.suppress(Exception):  # the first probe tries again and says what failed
        _prober()


def _context():
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" not in methods:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["onnxopt.runtime.contained", "onnxruntime"])
    return context


def _serve(conn) -> None:
    """The child: run each probe received; answer 0 (returned) or 1 (raised)."""
    global _IN_CHILD
    _IN_CHILD = True
    while True:
        try:
            fn, args = conn.recv()
        except (EOFError, OSError):  # the parent went away
            os._exit(0)
        try:
            fn(*args)
            code = 0
        except BaseException:  # a refusal: the parent raises it again with its own message
            code = 1
        conn.send(code)


def open_and_run(model: bytes | Path | str, settings: dict[str, Any]) -> None:
    """The child's work: the session the parent will create, run once on random inputs."""
    from onnxopt.runtime.io import random_session_feeds

    settings = dict(settings)
    backend = settings.pop("backend", "onnxruntime")
    session: Session
    if backend == "onnxruntime":
        from onnxopt.runtime.ort import OrtSession, make_session

        session = OrtSession(make_session(model, **settings))
    else:
        from onnxopt.runtime import get_backend

        session = get_backend(backend).load(model, **settings)
    session.run(random_session_feeds(session.inputs))


PROBE: Callable[..., Any] = open_and_run
"""What the child does (module-level so tests can swap in a crashing function)."""


def _crash_message(label: str, number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    return (
        f"{label}: the runtime crashed ({name}) opening and running the model{_where()} (in a "
        "child process; nothing else was lost): the model uses a graph this runtime cannot "
        "handle; report it to the runtime with the model, or change the rewrite that made it"
    )


def _where() -> str:
    name = _STAGE.get()
    return f" while {name}" if name else ""
