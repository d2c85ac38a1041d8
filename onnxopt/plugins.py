"""User code named in a config or on the command line: ``pkg.mod:fn`` or ``path/file.py:fn``.

A config is code: naming a function runs the user's module with the user's rights (the
threat model in the README). What onnxopt checks is that the name resolves to a callable;
any failure to import it is one line.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxopt.errors import UsageError, first_line


def load_callable(spec: str, base: Path | None = None, *, what: str = "function") -> Callable:
    """The callable ``spec`` names.

    Args:
        spec: ``"package.module:function"`` or ``"path/to/file.py:function"`` (relative
            paths are taken from ``base``, the config's folder).
        base: The folder relative file paths start from (default: the working directory).
        what: What it is, for messages (``"metric"``).

    Raises:
        UsageError: A malformed spec, a module that cannot be imported, or a name that is
            not a callable in it.
    """
    module_part, _, name = spec.rpartition(":")
    if not module_part or not name:
        raise UsageError(
            f"{what} {spec!r} must look like 'package.module:function' or 'file.py:function'"
        )
    try:
        if module_part.endswith(".py"):
            module = _from_file(Path(module_part) if base is None else base / module_part)
        else:
            module = importlib.import_module(module_part)
    except UsageError:
        raise
    except Exception as exc:  # the user's module: whatever it raises on import is theirs
        raise UsageError(
            f"{what} {spec!r}: cannot import {module_part} ({type(exc).__name__}: "
            f"{first_line(exc, 200)})"
        ) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise UsageError(f"{what} {spec!r}: {module_part} has no function {name!r}")
    return fn


def _from_file(path: Path) -> Any:
    if not path.is_file():
        raise UsageError(f"{path} does not exist; check the path (relative to the config)")
    key = "onnxopt_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module
