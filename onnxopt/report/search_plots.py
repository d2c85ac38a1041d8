"""Pareto-front plots of a search: interactive HTML (optuna.visualization / plotly) and PNG.

The PNG comes from plotly when kaleido is installed, else from matplotlib (same points:
every feasible COMPLETE trial, the best trials highlighted).
"""

from __future__ import annotations

import math
from pathlib import Path

from onnxopt.atomic import atomic_path, write_text
from onnxopt.optimizer.search.objective import objective_directions
from onnxopt.optimizer.search.pareto import is_feasible
from onnxopt.optimizer.search.run import SearchResult


def _axes(result: SearchResult) -> tuple[str, str]:
    """The two metrics plotted: the first two objectives, or accuracy vs size."""
    metrics = list(result.context.config.search.metrics)
    if len(metrics) >= 2 and not result.context.config.search.strategy.sum_scaled_metrics:
        return metrics[0], metrics[1]
    return "accuracy", "size"


def plot_html(result: SearchResult, path: Path) -> Path:
    """Optuna's Pareto-front plot (or optimization history for one objective) as HTML."""
    import optuna.visualization as vis

    search = result.context.config.search
    n = len(objective_directions(search))
    if n > 1:
        shown = slice(0, 2 if n > 3 else n)  # plotly draws 2 or 3 objectives
        fig = vis.plot_pareto_front(
            result.study, target_names=result.objectives[shown],
            targets=lambda t: t.values[shown],
        )  # fmt: skip
    else:
        fig = vis.plot_optimization_history(result.study, target_name=result.objectives[0])
    return write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))


def plot_png(result: SearchResult, path: Path) -> Path:
    """A scatter of two metrics over the feasible trials, best trials highlighted (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name, y_name = _axes(result)
    best = {t.number for t in result.best}
    points = []
    for t in result.study.trials:
        m = t.user_attrs.get("metrics", {})
        if is_feasible(t) and math.isfinite(m.get(x_name, math.nan)) and y_name in m:
            points.append((m[x_name], m[y_name], t.number in best))
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    ax.scatter([p[0] for p in points if not p[2]], [p[1] for p in points if not p[2]],
               c="tab:blue", alpha=0.5, label="feasible trials")  # fmt: skip
    ax.scatter([p[0] for p in points if p[2]], [p[1] for p in points if p[2]],
               c="tab:red", label="best (Pareto)")  # fmt: skip
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.set_title("search: feasible trials")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def write_plots(result: SearchResult) -> dict[str, Path]:
    """``pareto.html`` and ``pareto.png`` in the run directory."""
    folder = result.context.run_dir
    return {
        "plot_html": plot_html(result, folder / "pareto.html"),
        "plot_png": plot_png(result, folder / "pareto.png"),
    }
