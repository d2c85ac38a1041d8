"""Keeping torch's exporter output off the terminal; the one line that explains a failure.

torch's exporters write progress, warnings and, when torch.export fails, whole graph dumps
through its own logging handlers (bound to the process's stderr when torch was imported),
``warnings`` and C++ code writing to file descriptor 2. :func:`quiet` silences all of them
for the duration of an export. Their exceptions wrap the real cause in pages of advice
("Failed to export the model with torch.export. This is step 1/3 ..."): :func:`root_cause`
digs it out as one line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import TextIO

TORCH_LOGGERS = (
    "torch",
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch.fx",
    "torch.fx.experimental.symbolic_shapes",
    "onnxscript",
)
MAX_REASON = 300


@contextlib.contextmanager
def quiet(enabled: bool = True) -> Iterator[None]:
    """Silence stdout and stderr (also the file descriptors), warnings and torch's loggers.

    Args:
        enabled: False (``--debug``) leaves everything as it is.
    """
    if not enabled:
        yield
        return
    loggers = [logging.getLogger(name) for name in TORCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            _fd_to_devnull(1),
            _fd_to_devnull(2),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextlib.contextmanager
def _fd_to_devnull(fd: int) -> Iterator[None]:
    """Point ``fd`` at /dev/null: torch's log handlers hold the original stderr, and its C++
    code writes to the descriptors directly (the TorchScript exporter dumps its graph on 1)."""
    # what was written before must not vanish with the redirection
    _flush((sys.__stdout__, sys.__stderr__, sys.stdout, sys.stderr))
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (a detached process): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                # what torch buffered goes to /dev/null, not later to us
                _flush((sys.__stdout__, sys.__stderr__, *_stream_handlers()))
                os.dup2(saved, fd)
    finally:
        os.close(saved)


def _flush(streams: Iterable[TextIO | logging.Handler | None]) -> None:
    """Flush each stream that exists (``sys.__stdout__`` may be None), ignoring failures."""
    for stream in streams:
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()


def _stream_handlers() -> list[logging.Handler]:
    found: list[logging.Handler] = []
    for name in TORCH_LOGGERS:
        found += [
            h for h in logging.getLogger(name).handlers if isinstance(h, logging.StreamHandler)
        ]
    return found


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOILERPLATE = re.compile(
    r"^(Failed to (export|convert|decompose)\b|- |#+ |\(Refer to|⬆|<class '|"
    r"For (more|extended|C\+\+)|If you suspect|consider using|Caused by:|The error above)"
)
_SUMMARY = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>: (.+)")
_CALL_SITE = re.compile(
    r"The following call raised this error:\s*\n\s*File \"([^\"]+)\", line (\d+), in \w+\n\s*(.+)"
)


def root_cause(exc: BaseException) -> str:
    """The innermost meaningful ``Type: message`` of an exception chain, as one short line.

    Walks ``__cause__`` / ``__context__`` to the deepest exception with a message, skips
    torch's advice lines, and adds the user's line of code when torch names it.
    """
    chain = _chain(exc)
    found = next((c for c in map(_meaningful, reversed(chain)) if c), None)
    line = found or f"{type(exc).__name__}: {_first_text_line(str(exc))}".rstrip(": ")
    site = next((m for m in (_CALL_SITE.search(_clean(str(e))) for e in chain) if m), None)
    if site:
        path, lineno, code = site.groups()
        line += f" (at {os.path.basename(path)}:{lineno}: {code.strip()})"
    return shorten(line)


def shorten(text: str, limit: int = MAX_REASON) -> str:
    """One line, whitespace collapsed, cut at ``limit`` characters."""
    flat = " ".join(_clean(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _meaningful(exc: BaseException) -> str | None:
    text = _clean(str(exc))
    summary = _SUMMARY.search(text)  # torch's wrapper errors name the cause in a summary
    line = _first_text_line(text)
    if line:
        return f"{type(exc).__name__}: {line}"
    if summary:
        return f"{summary.group(1)}: {summary.group(2).strip()}"
    return None


def _first_text_line(text: str) -> str:
    lines = (line.strip() for line in _clean(text).splitlines())
    return next((line for line in lines if line and not _BOILERPLATE.match(line)), "")


def _clean(text: str) -> str:
    return _ANSI.sub("", text)
