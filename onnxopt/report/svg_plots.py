"""Static SVG scatter plots of a search, one per pair of metrics (matplotlib, no script).

Every point is a trial's raw measured value on the validation split (never a scaled
objective value), drawn by kind: ``infeasible`` (grey crosses), ``feasible`` (blue),
``pareto`` (red, labelled with the trial number) and the reference points ``fp32`` (black
star) and ``quantize_static`` (green diamond). Each kind's markers are one SVG group whose
id is ``<plot id>-<kind>``, so the report (and its browser test) can find them. Text stays
text (``svg.fonttype = none``) and the ids are stable, which keeps each plot a few tens of KB.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxopt import metrics as registry

KINDS = ("infeasible", "feasible", "pareto", "fp32", "quantize_static")
"""Point kinds, drawn in this order (later ones on top)."""

_STYLE: dict[str, dict[str, Any]] = {
    "infeasible": {"marker": "x", "c": "#9a9a9a", "s": 22, "alpha": 0.7, "zorder": 2,
                   "label": "infeasible trial"},
    "feasible": {"marker": "o", "c": "#4c78a8", "s": 22, "alpha": 0.55, "zorder": 3,
                 "label": "feasible trial"},
    "pareto": {"marker": "o", "c": "#d62728", "s": 48, "edgecolors": "black",
               "linewidths": 0.6, "zorder": 4, "label": "Pareto (exported)"},
    "fp32": {"marker": "*", "c": "black", "s": 160, "zorder": 5, "label": "fp32 baseline"},
    "quantize_static": {"marker": "D", "c": "#2ca02c", "s": 60, "edgecolors": "black",
                        "linewidths": 0.6, "zorder": 5,
                        "label": "onnxruntime quantize_static"},
}  # fmt: skip


@dataclass(frozen=True)
class Point:
    """One plotted model: its kind, raw metric values and a label (trial number)."""

    kind: str
    metrics: dict[str, float]
    label: str = ""


@dataclass
class Axis:
    """One plotted metric: its name, unit and whether larger values are better."""

    name: str
    unit: str = ""
    maximize: bool = True
    note: str = field(default="")

    @classmethod
    def of(cls, name: str, direction: str) -> Axis:
        """The axis of a metric (unit and latency batch size from the registry)."""
        unit = registry.metric(name).unit if registry.known(name) else ""
        note = ""
        if name == "latency" or name.startswith("latency_b"):
            note = f"batch {name[9:]}" if name.startswith("latency_b") else "first batch size"
        return cls(name, unit, direction == "maximize", note)

    def label(self) -> str:
        detail = ", ".join(x for x in (self.unit, self.note) if x)
        better = "higher is better" if self.maximize else "lower is better"
        return f"{self.name}{f' ({detail})' if detail else ''}, {better}"


def _log_scale(axis: Axis, values: Sequence[float]) -> bool:
    """Costs (bytes, ms) spanning more than 10x get a log axis; fractions never do."""
    if axis.unit not in ("bytes", "ms") or not values or min(values) <= 0:
        return False
    return max(values) > 10 * min(values)


def _view(values: Sequence[float]) -> tuple[float, float] | None:
    """The range of the points that matter (feasible and reference ones), padded."""
    if not values:
        return None
    low, high = min(values), max(values)
    pad = 0.08 * (high - low) or 0.05 * abs(high) or 1.0
    return low - pad, high + pad


def _clamped(points: Sequence[Point], x: Axis, y: Axis) -> tuple[list[Point], int]:
    """Infeasible points far outside the view of the others moved onto its edge (one trial
    at chance accuracy would otherwise squeeze every other point into a corner)."""
    kept = [p for p in points if p.kind != "infeasible"]
    views = {a.name: _view([p.metrics[a.name] for p in kept]) for a in (x, y)}
    out, moved = [], 0
    for p in points:
        if p.kind != "infeasible":
            out.append(p)
            continue
        metrics = dict(p.metrics)
        for name, view in views.items():
            if view is not None and not view[0] <= metrics[name] <= view[1]:
                metrics[name] = min(max(metrics[name], view[0]), view[1])
        moved += metrics != p.metrics
        out.append(Point(p.kind, metrics, p.label))
    return out, moved


def scatter_svg(plot_id: str, x: Axis, y: Axis, points: Sequence[Point]) -> str:
    """One scatter plot of ``y`` against ``x`` as an inline SVG element (no XML prolog).

    Points without a finite value for either metric (a trial never timed) are left out, and
    infeasible points far outside the others are drawn on the plot's edge; the title says
    how many of each.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    drawn, moved = _clamped([p for p in points if _finite(p, x.name) and _finite(p, y.name)],
                            x, y)  # fmt: skip
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": plot_id,
                                "font.size": 9}):  # fmt: skip
        fig = Figure(figsize=(5.4, 4.0), dpi=100)
        ax = fig.add_subplot()
        for kind in KINDS:
            some = [p for p in drawn if p.kind == kind]
            if not some:
                continue
            style = dict(_STYLE[kind])
            artist = ax.scatter([p.metrics[x.name] for p in some],
                                [p.metrics[y.name] for p in some], **style)  # fmt: skip
            artist.set_gid(f"{plot_id}-{kind}")
            if kind == "pareto":
                for p in some:
                    ax.annotate(p.label, (p.metrics[x.name], p.metrics[y.name]), fontsize=7,
                                xytext=(4, 3), textcoords="offset points")  # fmt: skip
        for axis, setter in ((x, ax.set_xscale), (y, ax.set_yscale)):
            if _log_scale(axis, [p.metrics[axis.name] for p in drawn]):
                setter("log")
        ax.set_xlabel(x.label())
        ax.set_ylabel(y.label())
        notes = []
        if len(points) > len(drawn):
            notes.append(f"{len(points) - len(drawn)} not measured on both")
        if moved:
            notes.append(f"{moved} infeasible beyond the view, on its edge")
        ax.set_title(f"{y.name} vs {x.name}" + (f"\n({'; '.join(notes)})" if notes else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
        fig.tight_layout()
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    return _inline(out.getvalue(), plot_id)


def _finite(p: Point, name: str) -> bool:
    value = p.metrics.get(name)
    return isinstance(value, int | float) and math.isfinite(value)


def _inline(svg: str, plot_id: str) -> str:
    """The ``<svg>`` element alone, with matplotlib's generic ids made unique per plot (several
    plots share one HTML document)."""
    svg = svg[svg.index("<svg") :]
    generic = re.compile(r'\bid="(?!' + re.escape(plot_id) + r"-)([^\"]+)\"")
    svg = generic.sub(lambda m: f'id="{plot_id}_{m.group(1)}"', svg)
    return re.sub(r'(href|url\()(="?)#(?!' + re.escape(plot_id) + r"-)",
                  lambda m: f"{m.group(1)}{m.group(2)}#{plot_id}_", svg)  # fmt: skip
