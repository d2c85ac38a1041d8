"""Search outputs: the lab's best-trials table, trials.csv, report.json and manifest.json.

Every file is written atomically (:mod:`onnxopt.atomic`). The page with the plots,
``report.html``, is :mod:`onnxopt.report.html_report`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from onnxopt import metrics as registry
from onnxopt.atomic import write_text
from onnxopt.optimizer.search.objective import scaled_metrics
from onnxopt.optimizer.search.pareto import is_feasible
from onnxopt.optimizer.search.study import redact
from onnxopt.report.versions import package_versions
from onnxopt.runtime.cpu import cpu_flags, integer_path

if TYPE_CHECKING:  # run.py loads the data and onnxruntime; `onnxopt status` needs neither
    from onnxopt.config.search import Search
    from onnxopt.optimizer.search.run import SearchResult


def _group(name: str) -> str:
    """``software`` (task quality; user metrics too) or ``hardware`` (cost), by the registry."""
    return registry.metric(name).group if registry.known(name) else "software"


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
            "software_metrics": {k: v for k, v in m.items() if _group(k) == "software"},
            "hardware_metrics": {k: v for k, v in m.items() if _group(k) == "hardware"},
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
            f"fp32 baseline (validation): {_figure(base)}"
            f"size {int(base['size']):,} bytes, latency {base['latency']:.4f} ms (batch {batch})"
        ),
        f"{kind} (feasible, by {', '.join(result.objectives)}):",
        render_table(best_rows(result)) if result.best else "  no feasible trial",
    ]
    lines += [_exported_line(e) for e in result.exported]
    return "\n".join(lines)


def _figure(base) -> str:
    headline = registry.headline(base)
    return f"{headline}, " if headline else ""


def _exported_line(e) -> str:
    """One exported trial: its test accuracy and what each shipped file measured."""
    files = [f".onnx {e.size_bytes:,} B"]
    if e.ort_path is not None:
        same = "same outputs" if e.ort_matches_onnx else "OUTPUTS DIFFER"
        files.append(f".ort {int(e.artifacts['ort']['size']):,} B ({same})")
    if e.verified is not None:
        rate = 100 * e.verified["match_rate"]
        files.append(f"{rate:.2f}% exact on {e.verified['integer_path']['class']}")
    return (
        f"trial {e.number}: test {e.test_headline or 'figures'}; {', '.join(files)} "
        f"-> {e.onnx_path}"
    )


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


def manifest_dict(result: SearchResult) -> dict[str, Any]:
    """manifest.json: config, package versions, seeds, CPU, data fingerprint."""
    config = result.context.config
    flags, model = cpu_flags()
    return {
        "config": config.model_dump(mode="json"),
        "versions": {"python": platform.python_version(), **package_versions()},
        "seeds": {"model": config.model.seed, "sampler": config.search.strategy.seed},
        "cpu": {"machine": platform.machine(), "model": model, "flags": sorted(flags)},
        "integer_path": integer_path().as_dict(),
        "threads": config.search.evaluation.threads,
        "runtime": config.search.evaluation.runtime,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "data_fingerprint": result.context.dataset.fingerprint(),
        "study_storage": redact(result.storage),  # never a password on disk
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
