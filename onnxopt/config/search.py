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

    [search.export]                # what each exported (Pareto / selected) trial is written as
    formats = ["onnx", "ort"]      # also "qonnx", "hls4ml" (the fpga extra)
    [search.export.hls4ml]         # onnxopt.config.fpga.Hls4mlOptions
    reuse_factor = 1
    verify = false                 # compile each project and compare it with onnxruntime

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

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from onnxopt.config.base import StrictModel
from onnxopt.config.fpga import ExportFormat, Hls4mlOptions
from onnxopt.config.quantization import (
    Calibration,
    FracWidth,
    LayerQuant,
    OpTypeKey,
    QuantizationConfig,
    StorageMode,
    WeightGranularity,
    Width,
)
from onnxopt.config.width import WidthConfig
from onnxopt.errors import did_you_mean

SAMPLERS = ("brute-force", "random", "tpe", "nsgaii", "nsgaiii", "qmc", "gp", "cmaes")
METRICS = ("accuracy", "loss", "latency", "size", "average_bitwidth", "memory_density")
MAXIMIZED = frozenset({"accuracy", "memory_density"})


def _as_list(value: object) -> object:
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,)


def _choices(item: Any) -> Any:
    return Annotated[tuple[item, ...], BeforeValidator(_as_list), Field(min_length=1)]


class LayerChoices(StrictModel):
    """LayerQuant keys, each one value (fixed) or a list of choices for the search."""

    enabled: _choices(bool) | None = None
    data_in_width: _choices(Width) | None = None
    data_in_frac_width: _choices(FracWidth) | None = None
    weight_width: _choices(Width) | None = None
    weight_frac_width: _choices(FracWidth) | None = None
    bias_width: _choices(Width) | None = None
    bias_frac_width: _choices(FracWidth) | None = None
    data_out_width: _choices(Width) | None = None
    data_out_frac_width: _choices(FracWidth) | None = None

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
            storage=self.storage,
            granularity=self.granularity,
            calibration=self.calibration,
            default=layers["default"],
            by_type={k: layers[f"by_type.{k}"] for k in self.by_type},
            by_name={k: layers[f"by_name.{k}"] for k in self.by_name},
        )


class Strategy(StrictModel):
    """How the study samples: sampler, budget and seed."""

    sampler: str = "tpe"
    n_trials: int = Field(20, ge=1, le=1_000_000)
    timeout: float | None = Field(None, gt=0)
    seed: int = 0
    sum_scaled_metrics: bool = False
    workers: int = Field(1, ge=1, le=64)
    enqueue: tuple[dict[str, float | int | str], ...] = ()
    """Points to evaluate first (parameter name -> value, as stored in the study)."""

    @field_validator("sampler")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; {did_you_mean(value, SAMPLERS)}")
        return value


class Metric(StrictModel):
    """One objective: its direction (default by metric) and the scale of its scaled value."""

    direction: Literal["maximize", "minimize"] | None = None
    scale: float = Field(1.0, gt=0)


class Constraints(StrictModel):
    """Feasibility limits; infeasible trials never win."""

    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    max_latency_ms: float | None = Field(None, gt=0)
    max_size_bytes: int | None = Field(None, gt=0)


class Evaluation(StrictModel):
    """How each trial is measured (a short latency budget keeps trials cheap)."""

    batch_sizes: tuple[int, ...] = (1, 256)
    threads: int = Field(1, ge=1)
    warmup: int = Field(2, ge=0)
    repeats: int = Field(5, ge=1)
    min_time_s: float = Field(0.005, ge=0)


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


class Search(StrictModel):
    """The ``[search]`` table."""

    quantization: SearchQuantization | None = None
    width: WidthConfig | None = None
    strategy: Strategy = Strategy()
    metrics: dict[str, Metric] = Field(default_factory=lambda: {"accuracy": Metric()})
    constraints: Constraints = Constraints()
    evaluation: Evaluation = Evaluation()
    export: SearchExport = SearchExport()

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: dict[str, Metric]) -> dict[str, Metric]:
        if not value:
            raise ValueError("give at least one metric")
        for name in value:
            if name not in METRICS:
                raise ValueError(f"unknown metric {name!r}; {did_you_mean(name, METRICS)}")
        return value

    @model_validator(mode="after")
    def _something(self) -> Search:
        if self.quantization is None and self.width is None:
            raise ValueError("give [search.quantization] and/or [search.width] choices")
        return self

    def direction(self, metric: str) -> str:
        """The metric's direction: as configured, else maximize accuracy/density, minimize rest."""
        given = self.metrics[metric].direction
        return given or ("maximize" if metric in MAXIMIZED else "minimize")


class ModelSource(StrictModel):
    """Where the base model comes from: a recipe trained on the fly, an ONNX file, or a torch
    factory ``package.module:function`` with its weights (a state dict)."""

    recipe: str | None = None
    onnx: Path | None = None
    factory: str | None = None
    weights: Path | None = None
    input_shape: tuple[int, ...] | None = None
    output: str | None = None
    """The class-score output's name, when the model has several outputs."""
    seed: int = 0
    epochs: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one(self) -> ModelSource:
        given = [k for k in ("recipe", "onnx", "factory") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of model.recipe, model.onnx and model.factory")
        if self.factory is not None and self.input_shape is None:
            raise ValueError("model.factory needs model.input_shape (per sample, e.g. [64])")
        if self.factory is None and (self.weights is not None or self.input_shape is not None):
            raise ValueError("model.weights and model.input_shape go with model.factory only")
        if self.input_shape is not None and any(d <= 0 for d in self.input_shape):
            raise ValueError(f"model.input_shape {list(self.input_shape)} must be positive")
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
        return self.model_copy(update={"model": model, "data": data})


def load_search_config(
    path: Path, *, n_trials: int | None = None, workers: int | None = None
) -> SearchConfig:
    """Load a search TOML file (paths relative to it), optionally overriding the strategy's
    ``n_trials`` and ``workers`` (command-line options)."""
    from onnxopt.config.base import load_toml

    config = load_toml(path, SearchConfig).resolve_paths(Path(path).parent)
    update = {k: v for k, v in (("n_trials", n_trials), ("workers", workers)) if v is not None}
    if update:
        strategy = config.search.strategy.model_copy(update=update)
        search = config.search.model_copy(update={"strategy": strategy})
        config = config.model_copy(update={"search": search})
    return config
