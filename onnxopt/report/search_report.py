"""Search outputs: the lab's best-trials table, trials.csv, report.json and manifest.json.

Every file is written atomically (:mod:`onnxopt.atomic`). Plots are in
:mod:`onnxopt.report.search_plots`.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from onnxopt.atomic import write_text
from onnxopt.optimizer.search.objective import scaled_metrics
from onnxopt.optimizer.search.pareto import is_feasible

if TYPE_CHECKING:  # run.py loads the data and onnxruntime; `onnxopt status` needs neither
    from onnxopt.config.search import Search
    from onnxopt.optimizer.search.run import SearchResult

SOFTWARE = ("accuracy", "loss")
HARDWARE = ("average_bitwidth", "memory_density", "size", "latency", "latency_b256")
PACKAGES = ("onnxopt", "onnx", "onnxruntime", "onnx-ir", "optuna", "numpy", "torch", "pydantic")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def _mapping(values: dict[str, float]) -> str:
    return "{" + ", ".join(f"'{k}': {_fmt(v)}" for k, v in values.items()) + "}"


def trial_rows(trials: list[FrozenTrial], search: Search) -> list[dict[str, Any]]:
    """One row per trial: number, software, hardware and scaled metrics."""
    rows = []
    for t in trials:
        m = t.user_attrs["metrics"]
        rows.append({
            "number": t.number,
            "software_metrics": {k: m[k] for k in SOFTWARE if k in m},
            "hardware_metrics": {k: m[k] for k in HARDWARE if k in m},
            "scaled_metrics": scaled_metrics(search, m),
        })  # fmt: skip
    return rows


def best_rows(result: SearchResult) -> list[dict[str, Any]]:
    """One row per best trial (:func:`trial_rows`)."""
    return trial_rows(result.best, result.context.config.search)


def render_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table in the lab's layout (``|  | number | software_metrics | ...``)."""
    header = ["", "number", "software_metrics", "hardware_metrics", "scaled_metrics"]
    body = [
        [str(i), str(r["number"]), _mapping(r["software_metrics"]),
         _mapping(r["hardware_metrics"]), _mapping(r["scaled_metrics"])]
        for i, r in enumerate(rows)
    ]  # fmt: skip
    widths = [max(len(c) for c in col) for col in zip(header, *body, strict=False)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|-" + "-+-".join("-" * w for w in widths) + "-|"
    return "\n".join([line(header), rule, *(line(b) for b in body)])


def summary(result: SearchResult) -> str:
    """A readable end-of-search summary: counts, baseline, the best-trials table, files."""
    states: dict[str, int] = {}
    for t in result.study.trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    base = result.baseline
    kind = "Pareto set" if len(result.objectives) > 1 else "best trial"
    batch = result.context.config.search.evaluation.batch_sizes[0]
    lines = [
        f"{len(result.study.trials)} trials ({counts}) in {result.seconds:.1f} s",
        (
            f"fp32 baseline (validation): accuracy {base['accuracy']:.4f}, "
            f"size {int(base['size']):,} bytes, latency {base['latency']:.4f} ms (batch {batch})"
        ),
        f"{kind} (feasible, by {', '.join(result.objectives)}):",
        render_table(best_rows(result)) if result.best else "  no feasible trial",
    ]
    for e in result.exported:
        lines.append(f"trial {e.number}: test accuracy {e.test_accuracy:.4f} -> {e.onnx_path}")
    return "\n".join(lines)


def _trial_row(t: FrozenTrial, metric_names: list[str]) -> dict[str, Any]:
    m = t.user_attrs.get("metrics", {})
    row: dict[str, Any] = {"number": t.number, "state": t.state.name}
    row.update(t.params)
    row.update({k: m.get(k, "") for k in metric_names})
    row["feasible"] = is_feasible(t)
    row["values"] = json.dumps(t.values) if t.values else ""
    row["fail_reason"] = t.user_attrs.get("fail_reason", "")
    row["seconds"] = t.duration.total_seconds() if t.duration else ""
    return row


def trials_csv(result: SearchResult) -> str:
    """Every trial as CSV: params, metrics, feasibility, failure reason."""
    metric_names = sorted({k for t in result.study.trials for k in t.user_attrs.get("metrics", {})})
    rows = [_trial_row(t, metric_names) for t in result.study.trials]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def report_dict(result: SearchResult) -> dict[str, Any]:
    """report.json: baseline, objectives, best trials (with test accuracy), counts."""
    exported = {e.number: e.as_dict() for e in result.exported}
    return {
        "objectives": result.objectives,
        "baseline_validation": result.baseline,
        "n_trials": len(result.study.trials),
        "recovered_trials": result.recovered,
        "seconds": result.seconds,
        "best": [
            {
                **row,
                "params": result.study.trials[row["number"]].params,
                "export": exported.get(row["number"]),
            }
            for row in best_rows(result)
        ],  # fmt: skip
    }


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_info() -> dict[str, Any]:
    """CPU model and flags from /proc/cpuinfo (empty where it does not exist)."""
    info: dict[str, Any] = {"machine": platform.machine(), "model": None, "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for raw in text.splitlines():
        key, _, value = raw.partition(":")
        if key.strip() == "model name" and info["model"] is None:
            info["model"] = value.strip()
        if key.strip() == "flags" and not info["flags"]:
            info["flags"] = value.split()
    return info


def manifest_dict(result: SearchResult) -> dict[str, Any]:
    """manifest.json: config, package versions, seeds, CPU, data fingerprint."""
    config = result.context.config
    return {
        "config": config.model_dump(mode="json"),
        "versions": {"python": platform.python_version(), **_versions()},
        "seeds": {"model": config.model.seed, "sampler": config.search.strategy.seed},
        "cpu": cpu_info(),
        "data_fingerprint": result.context.dataset.fingerprint(),
        "study_storage": result.storage,
    }


def write_reports(result: SearchResult) -> dict[str, Path]:
    """Write trials.csv, report.json and manifest.json into the run directory."""
    folder = result.context.run_dir
    return {
        "trials": write_text(folder / "trials.csv", trials_csv(result)),
        "report": write_text(folder / "report.json", json.dumps(report_dict(result), indent=2)),
        "manifest": write_text(
            folder / "manifest.json", json.dumps(manifest_dict(result), indent=2)
        ),
    }
