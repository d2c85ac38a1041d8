"""Search config: what to search (quantization and width choices), how, and what to optimize.

TOML shape (``onnxopt search CONFIG.toml``)::

    [model]
    recipe = "digits-mlp"          # trained on the fly (seed below), then exported; or
    # onnx = "model.onnx"          # an ONNX file (relative to the config file)
    seed = 0

    [data]
    dataset = "digits"             # or a path (+ format, label_column)

    [search.quantization]          # fixed keys, as in QuantizationConfig
    storage = "container"
    [search.quantization.by_type.linear]   # every key: one value (fixed) or a list (choices)
    data_in_width = [4, 8]
    weight_width = [2, 4, 8]
    bias_width = [2, 4, 8]
    weight_frac_width = ["NA"]

    [search.width.layers.node_linear]      # WidthConfig / LayerWidth semantics
    channel_multiplier = [0.25, 0.5, 1]
    mode = "output_only"

    [search.strategy]
    sampler = "tpe"                # brute-force, random, tpe, nsgaii, nsgaiii, qmc, gp, cmaes
    n_trials = 20
    seed = 0
    sum_scaled_metrics = false     # true: one objective, the signed sum of scaled metrics
    enqueue_obvious = true         # the default 8-bit and the narrowest point go first

    [search.metrics.accuracy]
    direction = "maximize"
    scale = 1.0
    [search.metrics.average_bitwidth]
    direction = "minimize"
    scale = 0.2

    [search.constraints]
    max_accuracy_drop = 0.02       # versus the fp32 baseline on the validation split
    max_latency_ms = 1.0           # batch-1 median
    max_size_bytes = 40000

    [search.storage]               # a database storage (--storage URL) that restarts
    retry_s = 60                   # a lost connection is retried this long, then --resume

    [search.export]                # what each exported (Pareto / selected) trial is written as
    formats = ["onnx", "ort"]      # also "qonnx", "hls4ml" (the fpga extra)
    [search.export.hls4ml]         # onnxopt.config.fpga.Hls4mlOptions
    reuse_factor = 1
    verify = false                 # compile each project and compare it with onnxruntime

    [search.report]                # report.html in the run directory
    quantize_static = true         # draw onnxruntime's quantize_static model in (measured once)

From the lab's MASE config
--------------------------
The lab wrote ``[search.search_space.seed.default.config]`` (the seed config every trial
starts from) and ``[search.search_space.seed.linear.config]`` with lists such as
``weight_width = [2, 4, 8]``; ``by = "type"`` chose by-type matching. Here:

* ``seed.default.config`` -> ``[search.quantization.default]`` (``name = "integer"`` is implied);
* ``seed.linear.config`` (``by = "type"``) -> ``[search.quantization.by_type.linear]``;
* ``seed.<node>.config`` (``by = "name"``) -> ``[search.quantization.by_name."<onnx node>"]``;
  the lab's ``name = "NA"`` (leave in float) is ``enabled = false``;
* ``[search.strategy.setup] n_trials/timeout/sampler/sum_scaled_metrics`` -> ``[search.strategy]``;
* ``[search.strategy.metrics.<m>] scale/direction`` -> ``[search.metrics.<m>]``;
* the lab's ``channel_multiplier`` per ``seq_blocks_N`` -> ``[search.width.layers."<onnx node>"]``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import (
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from onnxopt import metrics as registry
from onnxopt.config import bounds
from onnxopt.config.base import StrictModel, registered
from onnxopt.config.fpga import ExportFormat, Hls4mlOptions
from onnxopt.config.quantization import (
    ActivationMode,
    Calibration,
    FracWidth,
    LayerQuant,
    OpTypeKey,
    QuantizationConfig,
    StorageMode,
    TargetCpu,
    WeightFracWidth,
    WeightGranularity,
    Width,
)
from onnxopt.config.width import WidthConfig
from onnxopt.errors import did_you_mean
from onnxopt.samplers import SAMPLERS

if TYPE_CHECKING:
    from onnxopt.exporters.user_model import Preparation


def _as_list(value: object) -> object:
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


T = TypeVar("T")
Choices = Annotated[tuple[T, ...], BeforeValidator(_as_list), Field(min_length=1)]
"""One value (fixed) or a non-empty list of choices, stored as a tuple."""


class LayerChoices(StrictModel):
    """LayerQuant keys, each one value (fixed) or a list of choices for the search (the same
    keys as :class:`~onnxopt.config.quantization.LayerQuant`; a test ties the two)."""

    enabled: Choices[StrictBool] | None = None
    activation: Choices[ActivationMode] | None = None
    weight_granularity: Choices[WeightGranularity] | None = None
    data_in_width: Choices[Width] | None = None
    data_in_frac_width: Choices[FracWidth] | None = None
    weight_width: Choices[Width] | None = None
    weight_frac_width: Choices[WeightFracWidth] | None = None
    bias_width: Choices[Width] | None = None
    bias_frac_width: Choices[FracWidth] | None = None
    data_out_width: Choices[Width] | None = None
    data_out_frac_width: Choices[FracWidth] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> LayerChoices:
        for key, values in self.items().items():
            if len(set(values)) != len(values):
                raise ValueError(f"{key} choices {list(values)} repeat a value")
        return self

    def items(self) -> dict[str, tuple]:
        """The keys set, each with its choices (in config order)."""
        return {k: getattr(self, k) for k in type(self).model_fields if getattr(self, k)}


class SearchQuantization(StrictModel):
    """Quantization choices: fixed keys as in QuantizationConfig, per-layer keys as choices."""

    target_cpu: TargetCpu = "auto"
    storage: StorageMode = "container"
    granularity: WeightGranularity = "per_tensor"
    calibration: Calibration = Calibration()
    default: LayerChoices = LayerChoices()
    by_type: dict[OpTypeKey, LayerChoices] = {}
    by_name: dict[str, LayerChoices] = {}

    def entries(self) -> dict[str, LayerChoices]:
        """Every overlay by its dotted path: ``default``, ``by_type.linear``, ``by_name.n``."""
        out = {"default": self.default}
        out.update({f"by_type.{k}": v for k, v in self.by_type.items()})
        out.update({f"by_name.{k}": v for k, v in self.by_name.items()})
        return out

    def build(self, values: dict[str, dict[str, Any]]) -> QuantizationConfig:
        """The QuantizationConfig for one choice per key (``values[entry][key]``)."""
        layers = {path: LayerQuant(**values.get(path, {})) for path in self.entries()}
        return QuantizationConfig(
            target_cpu=self.target_cpu,
            storage=self.storage,
            granularity=self.granularity,
            calibration=self.calibration,
            default=layers["default"],
            by_type={k: layers[f"by_type.{k}"] for k in self.by_type},
            by_name={k: layers[f"by_name.{k}"] for k in self.by_name},
        )


class Strategy(StrictModel):
    """How the study samples: sampler, budget and seed."""

    sampler: Annotated[str, registered(lambda: SAMPLERS, "sampler")] = "tpe"
    n_trials: StrictInt = Field(20, ge=1, le=bounds.MAX_TRIALS)
    timeout: StrictFloat | None = Field(None, gt=0, le=bounds.MAX_TIMEOUT_S)
    seed: StrictInt = Field(0, ge=0, le=bounds.MAX_SEED)
    sum_scaled_metrics: StrictBool = False
    workers: StrictInt = Field(1, ge=1, le=bounds.MAX_WORKERS)
    enqueue: tuple[dict[str, float | int | str], ...] = ()
    """Points to evaluate first (parameter name -> value, as stored in the study)."""
    enqueue_obvious: StrictBool = True
    """After ``enqueue``, also evaluate the base model's default 8-bit point (full width) and
    the narrowest point first, so no sampler misses them."""
    exhaust_small_spaces: StrictBool = True
    """A space of at most ``n_trials`` points is searched by brute force (each point once),
    whatever the sampler: a sampler would revisit points and could miss some."""


    @model_validator(mode="after")
    def _worker_seeds(self) -> Strategy:
        top = self.seed + self.workers - 1  # worker i samples with seed + i
        if top > bounds.MAX_SEED:
            raise ValueError(
                f"seed {self.seed} with {self.workers} workers gives worker {self.workers - 1} "
                f"seed {top}, above {bounds.MAX_SEED} (2**32 - 1, numpy's largest seed); "
                f"use a seed <= {bounds.MAX_SEED - self.workers + 1}"
            )
        return self


class Metric(StrictModel):
    """One objective: its direction (default by metric) and the scale of its scaled value.

    A name the registry does not know is a user metric: ``function`` names it
    (``"pkg.mod:fn"`` or ``"path/file.py:fn"``, relative to the config; a config is code and
    must be trusted), ``fn(outputs, targets) -> float``.
    """

    direction: Literal["maximize", "minimize"] | None = None
    scale: StrictFloat = Field(1.0, gt=0, le=bounds.MAX_SCALE)
    k: StrictInt | None = Field(None, ge=1, le=bounds.MAX_TOP_K)
    """``top_k_accuracy``: how many of the best scores count."""
    function: str | None = None


class Constraints(StrictModel):
    """Feasibility limits; infeasible trials never win.

    ``max_metric_drop`` bounds how much any metric may get worse than the fp32 baseline's
    (a drop for maximized metrics, a rise for minimized ones): ``{cosine_to_reference =
    0.01}``; ``max_accuracy_drop`` is its oldest case.
    """

    max_accuracy_drop: StrictFloat | None = Field(None, ge=0, le=1)
    max_metric_drop: dict[str, Annotated[StrictFloat, Field(ge=0, le=bounds.MAX_METRIC_DROP)]] = {}
    max_latency_ms: StrictFloat | None = Field(None, gt=0, le=bounds.MAX_LATENCY_MS)
    max_size_bytes: StrictInt | None = Field(None, gt=0, le=bounds.MAX_SIZE_BYTES)


BatchSize = Annotated[StrictInt, Field(ge=1, le=bounds.MAX_BATCH_SIZE)]


def _runtime_names() -> tuple[str, ...]:
    from onnxopt.runtime import BACKENDS

    return tuple(BACKENDS)


class Evaluation(StrictModel):
    """How each trial is measured (a short latency budget keeps trials cheap)."""

    batch_sizes: tuple[BatchSize, ...] = Field((1, 256), min_length=1)
    threads: StrictInt = Field(1, ge=1, le=bounds.MAX_THREADS)
    warmup: StrictInt = Field(2, ge=0, le=bounds.MAX_WARMUP)
    repeats: StrictInt = Field(5, ge=1, le=bounds.MAX_REPEATS)
    min_time_s: StrictFloat = Field(0.005, ge=0, le=bounds.MAX_MIN_TIME_S)
    runtime: Annotated[str, registered(_runtime_names, "runtime")] = "onnxruntime"
    """The backend every candidate is measured on (:data:`onnxopt.runtime.BACKENDS`)."""
    screening: StrictFloat = Field(0.25, ge=0, lt=1)
    """With ``max_accuracy_drop``, a candidate is scored on this share of the validation
    split at a time, and stopped as soon as even all the samples still to score right could
    not keep it within the drop (0: the whole split at once). Exact: a stopped candidate
    could never have been feasible."""
    remeasure_rounds: StrictInt = Field(30, ge=0, le=bounds.MAX_REPEATS)
    """Before export, the front and the points within its noise are timed again interleaved
    for up to this many rounds and the front recomputed on those figures (0: off)."""


class SearchExport(StrictModel):
    """``[search.export]``: the formats each exported trial is written in (onnx always; the
    others are made from it; qonnx and hls4ml need the fpga extra) and the hls4ml options."""

    formats: tuple[ExportFormat, ...] = ("onnx", "ort")
    hls4ml: Hls4mlOptions = Hls4mlOptions()

    @field_validator("formats")
    @classmethod
    def _with_onnx(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "onnx" not in value:
            raise ValueError("formats must include 'onnx' (the other formats are made from it)")
        if len(set(value)) != len(value):
            raise ValueError(f"formats {list(value)} repeat a format")
        return value


class SearchReport(StrictModel):
    """``[search.report]``: what ``report.html`` compares the search's models with."""

    quantize_static: StrictBool = True
    """Quantize the base model once with onnxruntime's ``quantize_static`` (per-tensor QDQ,
    int8 weights, uint8 activations, the search's calibration split), measure it like a
    trial and draw it in every plot and the table."""


class StorageOptions(StrictModel):
    """``[search.storage]``: how a database storage (``--storage URL``) rides out a restart."""

    retry_s: StrictFloat = Field(60.0, ge=0, le=bounds.MAX_STORAGE_RETRY_S)
    """Seconds a call that lost its connection is retried (with backoff) before the worker
    gives up; ``--resume`` continues after that."""


class Search(StrictModel):
    """The ``[search]`` table."""

    quantization: SearchQuantization | None = None
    width: WidthConfig | None = None
    strategy: Strategy = Strategy()
    metrics: dict[str, Metric] = Field(default_factory=lambda: {"accuracy": Metric()})
    constraints: Constraints = Constraints()
    evaluation: Evaluation = Evaluation()
    export: SearchExport = SearchExport()
    storage: StorageOptions = StorageOptions()
    report: SearchReport = SearchReport()

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: dict[str, Metric]) -> dict[str, Metric]:
        if not value:
            raise ValueError("give at least one metric")
        for name, spec in value.items():
            if registry.known(name) and spec.function is not None:
                raise ValueError(
                    f"metrics.{name}: {name!r} is a built-in metric; give the user metric "
                    "another name, or drop function"
                )
            if not registry.known(name) and spec.function is None:
                hint = did_you_mean(name, [*registry.metric_names(), "latency_b256"])
                raise ValueError(
                    f"unknown metric {name!r}; {hint} (a user metric needs function = "
                    '"pkg.mod:fn" or "file.py:fn")'
                )
            if spec.k is not None and name != "top_k_accuracy":
                raise ValueError(f"metrics.{name}: k applies to top_k_accuracy only")
        return value

    @model_validator(mode="after")
    def _something(self) -> Search:
        if self.quantization is None and self.width is None:
            raise ValueError("give [search.quantization] and/or [search.width] choices")
        for name in self.constraints.max_metric_drop:
            if not registry.known(name) and name not in self.metrics:
                hint = did_you_mean(name, [*registry.metric_names(), *self.metrics])
                raise ValueError(f"constraints.max_metric_drop: unknown metric {name!r}; {hint}")
        measured = {registry.latency_name(b) for b in self.evaluation.batch_sizes}
        for name in self.metrics:
            if name.startswith("latency_b") and name not in measured:
                raise ValueError(
                    f"metric {name!r} needs batch size {name[9:]} in evaluation.batch_sizes "
                    f"(measured: {list(self.evaluation.batch_sizes)})"
                )
        return self

    @property
    def latency_decides(self) -> bool:
        """Whether latency is an objective or a constraint: then workers on one machine time
        their candidates one at a time (otherwise the figures are only reported)."""
        names = [*self.metrics, *self.constraints.max_metric_drop]
        timed = [n for n in names if registry.known(n) and registry.metric(n).tier == "latency"]
        return bool(timed) or self.constraints.max_latency_ms is not None

    def direction(self, metric: str) -> registry.Direction:
        """The metric's direction: as configured, else the registry's (user metrics without
        one are maximized)."""
        given = self.metrics[metric].direction if metric in self.metrics else None
        if given is not None:
            return given
        return registry.direction(metric) if registry.known(metric) else "maximize"


MAX_SAMPLE = bounds.MAX_INPUT_ELEMENTS
InputShape = Annotated[
    tuple[Annotated[StrictInt, Field(ge=1, le=MAX_SAMPLE)], ...],
    Field(min_length=1, max_length=bounds.MAX_INPUT_RANK),
]


# A fixed input holds any value an ONNX tensor can: finite floats, int64 integers, nested lists.
Value = (
    Annotated[StrictFloat, Field(ge=-3.4e38, le=3.4e38)]
    | Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]
    | list[Any]
)


class ModelInput(StrictModel):
    """Settings of one model input (``[model.inputs.<name>]``): a value the data do not give
    (a state, a sample rate: the same for every sample) and/or a static shape."""

    value: Value | None = None
    shape: list[Annotated[StrictInt, Field(ge=1, le=MAX_SAMPLE)] | Literal["?"]] | None = Field(
        None, min_length=1, max_length=8
    )
    """The input's full shape, the batch included: symbolic dimensions fixed ("?" keeps one
    as the model has it; a batch given stays fixed)."""

    @model_validator(mode="after")
    def _something(self) -> ModelInput:
        if self.value is None and self.shape is None:
            raise ValueError("give the input a value, a shape, or both")
        return self


class ModelSource(StrictModel):
    """Where the base model comes from: a recipe trained on the fly, an ONNX file, or a torch
    factory ``package.module:function`` with its weights (a state dict)."""

    recipe: str | None = None
    onnx: Path | None = None
    factory: str | None = None
    weights: Path | None = None
    input_shape: InputShape | None = None
    output: str | None = None
    """The scored output's name, when the model has several outputs."""
    task: Annotated[str, registered(registry.task_names, "task")] = "classification"
    """What the model does: its default metrics and how its output is read."""
    inputs: dict[str, ModelInput] = {}
    """Per-input settings: values the data do not give, static shapes."""
    batch_size_fixed: StrictBool = False
    """Keep a batch axis the ONNX file fixes (by default it is freed and checked)."""
    seed: StrictInt = Field(0, ge=0, le=bounds.MAX_SEED)
    epochs: StrictInt | None = Field(None, ge=1, le=bounds.MAX_EPOCHS)

    def fixed_values(self) -> dict[str, Any]:
        """Values for inputs the data do not give, by input name."""
        return {name: i.value for name, i in self.inputs.items() if i.value is not None}

    def preparation(self, opset: int | None = None) -> Preparation:
        """How an ONNX file of this source is prepared (:mod:`onnxopt.exporters.user_model`)."""
        from onnxopt.exporters.user_model import Preparation

        shapes = {
            n: tuple(None if d == "?" else d for d in i.shape)
            for n, i in self.inputs.items()
            if i.shape is not None
        }
        return Preparation(opset=opset, input_shapes=shapes, keep_batch=self.batch_size_fixed)

    @model_validator(mode="after")
    def _one(self) -> ModelSource:
        given = [k for k in ("recipe", "onnx", "factory") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of model.recipe, model.onnx and model.factory")
        if self.factory is not None and self.input_shape is None:
            raise ValueError("model.factory needs model.input_shape (per sample, e.g. [64])")
        if self.factory is None and (self.weights is not None or self.input_shape is not None):
            raise ValueError("model.weights and model.input_shape go with model.factory only")
        if self.input_shape is not None and math.prod(self.input_shape) > MAX_SAMPLE:
            raise ValueError(
                f"model.input_shape {list(self.input_shape)} has "
                f"{math.prod(self.input_shape):,} elements per sample, above {MAX_SAMPLE:,}"
            )
        return self


class DataSource(StrictModel):
    """The dataset: ``"digits"`` or a file path (format inferred unless given)."""

    dataset: str = "digits"
    format: str | None = None
    label_column: str = "label"


class SearchConfig(StrictModel):
    """A whole search config file."""

    model: ModelSource
    data: DataSource = DataSource()
    search: Search

    def resolve_paths(self, base: Path) -> SearchConfig:
        """Relative model and data paths made relative to ``base`` (the config's folder)."""
        model, data = self.model, self.data
        for key in ("onnx", "weights"):
            value = getattr(model, key)
            if value is not None and not value.is_absolute():
                model = model.model_copy(update={key: base / value})
        candidate = base / data.dataset
        if data.dataset != "digits" and not Path(data.dataset).is_absolute() and candidate.exists():
            data = data.model_copy(update={"dataset": str(candidate)})
        metrics = {}
        for name, spec in self.search.metrics.items():
            module, _, fn = (spec.function or "").rpartition(":")
            if module.endswith(".py") and not Path(module).is_absolute():
                spec = spec.model_copy(update={"function": f"{base / module}:{fn}"})
            metrics[name] = spec
        search = self.search.model_copy(update={"metrics": metrics})
        return self.model_copy(update={"model": model, "data": data, "search": search})


def load_search_config(
    path: Path, *, n_trials: int | None = None, workers: int | None = None
) -> SearchConfig:
    """Load a search TOML file (paths relative to it), optionally overriding the strategy's
    ``n_trials`` and ``workers`` (command-line options), which are validated like the file."""
    from onnxopt.config.base import load_toml, validate

    config = load_toml(path, SearchConfig).resolve_paths(Path(path).parent)
    update = {k: v for k, v in (("n_trials", n_trials), ("workers", workers)) if v is not None}
    if update:
        data = config.model_dump(exclude_unset=True)
        data.setdefault("search", {}).setdefault("strategy", {}).update(update)
        options = " and ".join(f"--{k.replace('_', '-')} {v}" for k, v in update.items())
        config = validate(SearchConfig, data, source=f"{path} with {options}")
    return config
