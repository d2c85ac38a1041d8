"""One exception tree for onnxopt.

Every error a user can cause or meet derives from :class:`OnnxoptError` and carries the
process exit code the CLI uses: 2 for usage, config and input errors (the user must change
something), 1 for runtime failures (the work itself failed).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class OnnxoptError(Exception):
    """Base of every error onnxopt raises on purpose."""

    exit_code = 1


class UsageError(OnnxoptError):
    """Bad input from the user: a missing file, a wrong format, an unknown name."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file or value that does not validate."""


class DataError(UsageError):
    """A dataset that cannot be read or does not fit the model."""


class ModelLoadError(UsageError):
    """A model file that cannot be read as a model onnxopt can work on."""


class ExportError(OnnxoptError):
    """torch -> ONNX export failed or produced a model that disagrees with torch."""


class RewriteError(OnnxoptError):
    """A graph rewrite (quantization, width scaling) could not be applied."""


class EvaluationError(OnnxoptError):
    """onnxruntime refused or failed to run a model."""


class MetricError(UsageError):
    """A metric could not be computed: a user metric function raised or returned no finite
    number, or a value is NaN/Inf. On the fp32 baseline it stops the command before any
    study exists (exit 2); on a search candidate its trial fails with the reason."""


class StorageDamagedError(UsageError):
    """A study storage file onnxopt cannot read (a damaged record, an empty or foreign file);
    the message names the file, the record and the way to recover."""


class StorageUnavailableError(OnnxoptError):
    """The study's database stayed unreachable for longer than the retry budget."""


class CandidateError(OnnxoptError):
    """A search candidate that could not be built or measured; its trial fails with this
    reason and the search goes on (only onnxopt and runtime errors become one)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when the message is empty),
    cut at ``limit`` characters: what a one-line error quotes of a library's exception."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates closest to ``name`` (for 'did you mean' hints)."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: Iterable[str], n: int = 3) -> str:
    """A hint naming the closest candidates, or listing the valid ones when none is close."""
    pool = sorted(set(candidates))
    near = closest(name, pool, n)
    if near:
        return "did you mean " + ", ".join(repr(c) for c in near) + "?"
    shown = ", ".join(repr(c) for c in pool[:8])
    more = f" (and {len(pool) - 8} more)" if len(pool) > 8 else ""
    return f"valid names: {shown}{more}"


class SearchFailedError(OnnxoptError):
    """Every trial of a search failed: the message gives the top failure reasons."""
