"""``report.html``: one self-contained page that tells which model to ship.

No script and no external file: inline CSS and static SVG plots (:mod:`.svg_plots`), so it
opens offline in any browser and stays well under 1 MB. It shows the search's counts, the
fp32 baseline and onnxruntime's ``quantize_static`` model (:mod:`onnxopt.optimizer.search.
reference_points`), a table of the exported Pareto models (validation figures the search
saw, test figures of the written file, ratios to fp32, links to the files and deployment
cards) and a plot for every pair of metrics, with raw values and units.
"""

from __future__ import annotations

import html
import itertools
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from optuna.trial import TrialState

from onnxopt import metrics as registry
from onnxopt.atomic import write_text
from onnxopt.optimizer.search.pareto import is_feasible
from onnxopt.report.ship import stopped_accuracy_bound, trial_counts
from onnxopt.report.svg_plots import Axis, Point, scatter_svg

if TYPE_CHECKING:
    from onnxopt.optimizer.search.export import ExportedTrial
    from onnxopt.optimizer.search.run import SearchResult

REPORT_FILE = "report.html"

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:.5em}.plots figure{margin:0}
.plots svg{width:540px;height:auto;max-width:100%}.muted{color:#777}.bad{color:#b00}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(name: str, value: Any) -> str:
    """A metric value for people: bytes with separators, fractions to 4 places."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    unit = registry.metric(name).unit if registry.known(name) else ""
    if unit == "bytes":
        return f"{int(value):,} B"
    if unit == "ms":
        return f"{value:.4g} ms"
    if unit:
        return f"{value:.4g} {unit}"
    return f"{value:.4f}"


def plotted_metrics(result: SearchResult) -> list[str]:
    """The metrics plotted against each other: the configured ones, plus ``size`` when only
    one is configured (a single objective still has a cost to set it against)."""
    names = list(result.context.config.search.metrics)
    if len(names) < 2:
        names.append("size" if "size" not in names else "accuracy")
    return names


def _points(result: SearchResult, refs: dict[str, dict]) -> list[Point]:
    best = {t.number for t in result.best}
    points = []
    for t in result.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        metrics = t.user_attrs.get("metrics") or {}
        kind = "pareto" if t.number in best else "feasible" if is_feasible(t) else "infeasible"
        if (bound := stopped_accuracy_bound(t)) is not None:
            # screening stopped it: drawn where it could at best have been
            metrics = {**metrics, "accuracy": bound}
        points.append(Point(kind, metrics, f"#{t.number}"))
    for name, ref in refs.items():
        if "validation" in ref:
            points.append(Point(name, ref["validation"], name))
    return points


def plots_html(result: SearchResult, refs: dict[str, dict]) -> str:
    """One ``<figure>`` per pair of plotted metrics."""
    search = result.context.config.search
    axes = [Axis.of(n, search.direction(n)) for n in plotted_metrics(result)]
    points = _points(result, refs)
    figures = []
    for i, (x, y) in enumerate(itertools.combinations(axes, 2)):
        svg = scatter_svg(f"plot{i}", x, y, points)
        figures.append(f'<figure class="plot" id="plot{i}">{svg}</figure>')
    return '<div class="plots">' + "".join(figures) + "</div>"


def _counts(result: SearchResult) -> str:
    c = trial_counts(result.study.get_trials(deepcopy=False))
    by = ", ".join(f"{n} by {name}" for name, n in sorted(c.violated.items()))
    stopped = f" ({c.stopped} stopped early by screening)" if c.stopped else ""
    return (
        f"{c.total} trials: {c.complete} complete ({c.feasible} feasible, "
        f"{c.infeasible} infeasible{f': {by}' if by else ''}{stopped}), "
        f"{c.failed} failed; {len(result.best)} on the Pareto set; "
        f"{result.seconds:.1f} s"
    )


def _link(path: Path | str | None, run_dir: Path, text: str) -> str:
    if path is None:
        return ""
    rel = os.path.relpath(Path(path).resolve(), run_dir.resolve())
    return f'<a href="{_esc(quote(Path(rel).as_posix()))}">{_esc(text)}</a>'


def _ratio(fp32: float | None, value: float | None, word: str) -> str:
    if not fp32 or not value or not math.isfinite(fp32) or not math.isfinite(value):
        return ""
    return f'<br><span class="muted">{fp32 / value:.2f}x {word}</span>'


def _test_cells(test: dict, fp32: dict, batches: Sequence[int]) -> list[str]:
    """Test accuracy, size and latency per batch size of a file, with ratios to fp32."""
    cells = [fmt("accuracy", test.get("accuracy"))]
    cells.append(fmt("size", test.get("size")) + _ratio(fp32.get("size"), test.get("size"),
                                                        "smaller"))  # fmt: skip
    for b in batches:
        name = registry.latency_name(b)
        cells.append(fmt(name, test.get(name)) + _ratio(fp32.get(name), test.get(name),
                                                        "faster"))  # fmt: skip
    return cells


def _header(metrics: Sequence[str], batches: Sequence[int]) -> str:
    val = "".join(f"<th>{_esc(m)}</th>" for m in metrics)
    lat = "".join(f"<th>latency b{b}</th>" for b in batches)
    return (
        '<thead><tr><th class="l" rowspan="2">model</th>'
        f'<th colspan="{len(metrics)}">validation (what the search saw)</th>'
        f'<th colspan="{2 + len(batches)}">test split (the written .onnx file)</th>'
        '<th class="l" rowspan="2">files</th></tr>'
        f"<tr>{val}<th>accuracy</th><th>size</th>{lat}</tr></thead>"
    )


def _pareto_rows(result: SearchResult, fp32: dict, batches: Sequence[int]) -> list[str]:
    run_dir = result.context.run_dir
    exported: dict[int, ExportedTrial] = {e.number: e for e in result.exported}
    metrics = plotted_metrics(result)
    rows = []
    for t in result.best:
        m = t.user_attrs.get("metrics") or {}
        e = exported.get(t.number)
        cells = [fmt(n, m.get(n)) for n in metrics]
        if e is None:
            cells += ["not exported"] * (2 + len(batches))
            files = ""
        else:
            cells += _test_cells(e.artifacts["onnx"], fp32, batches)
            card_md = None if e.card_path is None else Path(str(e.card_path)).with_suffix(".md")
            files = " ".join(x for x in (
                _link(e.onnx_path, run_dir, ".onnx"), _link(e.ort_path, run_dir, ".ort"),
                _link(card_md, run_dir, "card"), _link(e.card_path, run_dir, "card.json"),
                _link(e.config_path, run_dir, "trial.json"),
            ) if x)  # fmt: skip
        body = "".join(f"<td>{c}</td>" for c in cells)
        rows.append(f'<tr class="pareto" id="trial-{t.number}"><td class="l">trial '
                    f'{t.number}</td>{body}<td class="l">{files}</td></tr>')  # fmt: skip
    return rows


def _reference_rows(result: SearchResult, refs: dict, batches: Sequence[int]) -> list[str]:
    metrics = plotted_metrics(result)
    fp32 = refs.get("fp32", {}).get("test", {})
    rows = []
    for name, ref in refs.items():
        if "error" in ref:
            width = len(metrics) + 3 + len(batches)
            rows.append(f'<tr class="reference" id="ref-{name}"><td class="l">{_esc(name)}</td>'
                        f'<td class="l bad" colspan="{width}">{_esc(ref["error"])}</td></tr>')
            continue
        cells = [fmt(n, ref["validation"].get(n)) for n in metrics]
        cells += _test_cells(ref["test"], fp32, batches)
        feasible = "" if ref.get("feasible", True) else ' <span class="bad">(infeasible)</span>'
        file = _link(ref.get("path"), result.context.run_dir, ".onnx")
        if name == "fp32" and (result.context.run_dir / "base.onnx").is_file():
            file = _link(result.context.run_dir / "base.onnx", result.context.run_dir, ".onnx")
        body = "".join(f"<td>{c}</td>" for c in cells)
        rows.append(f'<tr class="reference" id="ref-{name}"><td class="l">{_esc(name)}'
                    f'{feasible}</td>{body}<td class="l">{file}</td></tr>')  # fmt: skip
    return rows


def table_html(result: SearchResult, refs: dict[str, dict]) -> str:
    """The Pareto models and the reference points in one table."""
    batches = result.context.config.search.evaluation.batch_sizes
    fp32 = refs.get("fp32", {}).get("test", {})
    width = len(plotted_metrics(result)) + 4 + len(batches)
    none = (f'<tr><td class="l" colspan="{width}">no feasible trial: loosen the constraints '
            "or widen the space</td></tr>")  # fmt: skip
    rows = _pareto_rows(result, fp32, batches) or [none]
    rows += _reference_rows(result, refs, batches)
    return (f'<table id="pareto-table">{_header(plotted_metrics(result), batches)}<tbody>'
            + "".join(rows) + "</tbody></table>")  # fmt: skip


def report_html(result: SearchResult, refs: dict[str, dict]) -> str:
    """The whole page."""
    config = result.context.config
    search = config.search
    model = config.model.recipe or config.model.onnx or config.model.factory
    limits = {k: v for k, v in search.constraints.model_dump().items() if v not in (None, {})}
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>onnxopt search: {_esc(model)}</title><style>{_CSS}</style></head><body>"
        f"<h1>onnxopt search: {_esc(model)}</h1>"
        f'<p id="counts">{_esc(_counts(result))}</p>'
        f"<p>objectives: {_esc(', '.join(result.objectives))}; sampler "
        f"{_esc(search.strategy.sampler)}, seed {search.strategy.seed}; constraints: "
        f"{_esc(limits or 'none')}; latency with {search.evaluation.threads} thread(s) on "
        f"{_esc(search.evaluation.runtime)}.</p>"
        "<h2>Models to ship</h2><p>Pareto models (feasible, not dominated) beside the fp32 "
        "model and onnxruntime's quantize_static (per-tensor QDQ, same calibration split). "
        "Ratios are against the fp32 file on the test split.</p>"
        f"{table_html(result, refs)}"
        "<h2>Every pair of metrics</h2><p>Raw values on the validation split; infeasible "
        "trials are grey crosses, Pareto models red and labelled with their trial number."
        f"</p>{plots_html(result, refs)}</body></html>\n"
    )


def write_html_report(result: SearchResult, refs: dict[str, dict]) -> Path:
    """Write ``report.html`` into the run directory (atomically)."""
    return write_text(result.context.run_dir / REPORT_FILE, report_html(result, refs))
