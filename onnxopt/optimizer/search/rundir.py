"""The run directory: checked before any work, its previous search moved aside on --restart.

Layout: ``study.journal`` (the default storage), ``base.onnx`` and ``base.json`` (the base
model and what it was made from), ``pareto/`` (the exported best set), ``trials.csv``,
``report.json``, ``report.html`` (with ``quantize_static.onnx``, onnxruntime's model it
compares with), ``manifest.json``, ``latency.json`` (the front timed again before export) and
``workers/`` (logs of the worker processes); earlier versions wrote
``pareto.html``/``pareto.png``, which --restart moves aside too.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

from onnxopt.errors import UsageError

MIN_FREE_BYTES = 64 * 2**20
"""Free space a search needs beyond what its base model takes (journal, reports, models)."""

PREVIOUS = "previous-"
"""``--restart`` moves the previous search into ``previous-<time>/``."""

RUN_FILES = (
    "study.journal", "study.journal.lock", "study.journal.slots.lock", "base.onnx", "base.json",
    "pareto", "selected", "workers", "trials.csv", "report.json", "report.html",
    "manifest.json", "quantize_static.onnx", "latency.json", "pareto.html", "pareto.png",
)  # fmt: skip
"""What a search writes into its run directory (what --restart moves aside)."""


def prepare_run_dir(run_dir: Path, model_bytes: int = 0) -> Path:
    """Create the run directory and check, before any work, that a search can write there.

    Args:
        run_dir: The run directory.
        model_bytes: The base model's size; exported candidates take up to a few times it.

    Raises:
        UsageError: When the directory cannot be created or written, or its disk is (nearly)
            full.
    """
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"run directory {run_dir} is not writable ({exc.strerror or exc}); "
            "choose another --run-dir"
        ) from None
    need = MIN_FREE_BYTES + 4 * model_bytes
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise UsageError(
            f"only {free / 2**20:.0f} MiB free on the disk of {run_dir}, a search needs about "
            f"{need / 2**20:.0f} MiB; free some space or choose another --run-dir"
        )
    return run_dir


def move_aside(run_dir: Path, *, journal: bool) -> Path | None:
    """Move the previous search's files into ``run_dir/previous-<time>/`` (``--restart``).

    Args:
        run_dir: The run directory.
        journal: Also move the run directory's journal (it is the search's storage).

    Returns:
        The folder they went to (None when there was nothing to move).
    """
    run_dir = Path(run_dir)
    names = [n for n in RUN_FILES if journal or not n.startswith("study.journal")]
    present = [run_dir / n for n in names if os.path.lexists(run_dir / n)]
    if not present:
        return None
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = run_dir / f"{PREVIOUS}{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = run_dir / f"{PREVIOUS}{stamp}-{n}"
    target.mkdir()
    for path in present:
        os.replace(path, target / path.name)
    return target
