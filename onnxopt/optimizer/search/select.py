"""Pick one finished trial by a rule: ``"min size where accuracy_drop <= 0.01"``.

Grammar: ``(min|max) METRIC [where COND (and COND)*]`` with ``COND = METRIC OP NUMBER`` and
``OP`` one of ``<= >= < > ==``. Metrics are those stored per trial (accuracy, loss, size,
average_bitwidth, memory_density, latency, latency_b<N>, mse, cosine_to_reference...) plus
``<metric>_drop`` for every task metric of the fp32 baseline (``accuracy_drop``: baseline
minus accuracy; ``mse_drop``: mse minus the baseline's; validation split). Only feasible
COMPLETE trials are considered.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from onnxopt import metrics as registry
from onnxopt.errors import UsageError
from onnxopt.metrics import samples_of
from onnxopt.optimizer.search.pareto import is_feasible
from onnxopt.optimizer.search.study import STUDY_NAME

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
}  # fmt: skip
_COND = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=|==|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Rule:
    """An objective to minimize or maximize over trials meeting every condition."""

    goal: str
    metric: str
    conditions: tuple[tuple[str, str, float], ...] = ()


def parse_rule(text: str) -> Rule:
    """Parse a selection rule.

    Raises:
        UsageError: With what is wrong and the expected grammar.
    """
    head, _, tail = text.strip().partition(" where ")
    words = head.split()
    if len(words) != 2 or words[0] not in ("min", "max"):
        raise UsageError(f"rule {text!r} must start with 'min METRIC' or 'max METRIC'")
    conditions = []
    for part in filter(None, (p.strip() for p in tail.split(" and "))) if tail else ():
        match = _COND.match(part)
        if not match:
            raise UsageError(f"condition {part!r} must look like 'accuracy_drop <= 0.01'")
        name, op, number = match.groups()
        try:
            conditions.append((name, op, float(number)))
        except ValueError:
            raise UsageError(f"condition {part!r}: {number!r} is not a number") from None
    return Rule(words[0], words[1], tuple(conditions))


def trial_metrics(
    trial: FrozenTrial, baseline: Mapping[str, float], samples: int | None = None
) -> dict[str, float]:
    """A trial's stored metrics plus ``<metric>_drop`` for every task metric of the baseline
    (how much worse than the fp32 baseline: a fall for maximized metrics, a rise for
    minimized ones; ``accuracy_drop``, ``mse_drop``, ``cosine_to_reference_drop``...).

    With the validation split's size ``samples``, the drop of a metric that counts samples
    is whole samples over it (8 of 400 is exactly 0.02, as a rule's ``accuracy_drop <= 0.02``
    means), not a float difference that lands a rounding error above.
    """
    metrics = dict(trial.user_attrs.get("metrics", {}))
    for name, base in baseline.items():
        if name not in metrics or not registry.known(name):
            continue
        spec = registry.metric(name)
        if spec.group == "software":
            worse = base - metrics[name] if spec.direction == "maximize" else metrics[name] - base
            if samples and spec.counted:
                worse = samples_of(worse, samples) / samples
            metrics[f"{name}_drop"] = worse
    return metrics


def select_trial(
    trials: list[FrozenTrial],
    rule: Rule,
    baseline: Mapping[str, float],
    samples: int | None = None,
) -> FrozenTrial:
    """The feasible trial that best meets ``rule`` (lowest number on ties).

    Raises:
        UsageError: For an unknown metric or when no trial meets the conditions.
    """
    scored = [(t, trial_metrics(t, baseline, samples)) for t in trials if is_feasible(t)]
    known = set().union(*(m.keys() for _, m in scored)) if scored else set()
    for name in (rule.metric, *(c[0] for c in rule.conditions)):
        if scored and name not in known:
            from onnxopt.errors import did_you_mean

            raise UsageError(f"unknown metric {name!r} in the rule; {did_you_mean(name, known)}")
    ok = [
        (t, m) for t, m in scored
        if rule.metric in m and all(c in m and OPS[op](m[c], v) for c, op, v in rule.conditions)
    ]  # fmt: skip
    if not ok:
        raise UsageError("no feasible finished trial meets the rule; loosen the conditions")
    sign = 1.0 if rule.goal == "min" else -1.0
    return min(ok, key=lambda p: (sign * p[1][rule.metric], p[0].number))[0]


def select_and_export(
    source: str, rule: Rule, run_dir=None, out_dir=None, study_name: str | None = None,
    formats: tuple[str, ...] | None = None, verify: bool | None = None,
):  # fmt: skip
    """Open a stored search, pick one trial by ``rule`` and export it.

    Args:
        source: A run directory (holding ``study.journal``), an Optuna storage URL or a
            journal file.
        rule: The selection rule.
        run_dir: The run directory when ``source`` is a URL (base model, outputs).
        out_dir: Where the selected model goes (default ``run_dir/selected``).
        study_name: The study (default ``onnxopt-search``).
        formats: Export formats instead of the config's ``[search.export] formats`` (onnx is
            always written); qonnx / hls4ml failures are errors here.
        verify: Compile and check the hls4ml project (default: the config's).

    Returns:
        ``(trial, ExportedTrial)``.
    """
    from pathlib import Path

    from onnxopt.config.base import validate
    from onnxopt.config.search import SearchConfig
    from onnxopt.optimizer.search.context import SearchContext
    from onnxopt.optimizer.search.export import export_trial
    from onnxopt.optimizer.search.opening import check_same_search
    from onnxopt.optimizer.search.study import load_study, resolve_source

    url = resolve_source(source)
    if run_dir is None:
        if not Path(source).is_dir():
            raise UsageError("with a storage URL or file, pass --run-dir (where the base model is)")
        run_dir = Path(source)
    study = load_study(url, study_name or STUDY_NAME)
    config = validate(SearchConfig, study.user_attrs["config"], source=url)
    attrs = study.user_attrs
    trial = select_trial(
        study.get_trials(), rule, attrs["baseline"], attrs.get("validation_samples")
    )
    ctx = SearchContext.prepare(
        config, Path(run_dir), expected_sha256=study.user_attrs.get("base_sha256")
    )
    # the model is rebuilt from the trial's params on this base and data: they must be the
    # study's, byte for byte (a base.onnx another search replaced, a changed data file)
    check_same_search(study, ctx, space=False)
    folder = Path(out_dir) if out_dir else Path(run_dir) / "selected"
    export = config.search.export
    if formats is not None or verify is not None:
        hls4ml = export.hls4ml.model_copy(update={"verify": bool(verify)}) if verify else None
        export = export.model_copy(update={
            "formats": tuple(dict.fromkeys(("onnx", *(formats or export.formats)))),
            "hls4ml": hls4ml or export.hls4ml,
        })  # fmt: skip
    exported = export_trial(
        trial,
        ctx.space,
        ctx.builder,
        ctx.test_measurer(),
        folder,
        latency=ctx.evaluator.plan,
        export=export,
        strict=True,
        preprocessing=ctx.dataset.preprocessing,
    )
    return trial, exported
