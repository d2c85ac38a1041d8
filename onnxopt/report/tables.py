"""Plain-text tables for the CLI."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_flatten(value, name + "."))
        elif isinstance(value, list | tuple) and value and isinstance(value[0], Mapping):
            continue  # per-tensor detail belongs in --json, not in the summary table
        else:
            rows.append((name, _fmt(value)))
    return rows


def key_value_table(data: Mapping[str, Any], title: str = "") -> str:
    """A two-column table of a (nested) mapping; nested keys are joined with dots."""
    rows = _flatten(data)
    width = max((len(k) for k, _ in rows), default=0)
    lines = [title, "-" * max(len(title), width + 20)] if title else []
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


def evaluation_table(report: Any, title: str = "") -> str:
    """The summary of an evaluation report (anything with ``to_dict()``)."""
    return key_value_table(report.to_dict(), title)
