"""The search space: one named dimension per choice the config leaves open.

Parameter names are stable strings stored in the study: ``q.<entry>.<key>`` for
quantization keys (``q.by_type.linear.weight_width``) and ``w.<group>`` for width groups
(the channel group names of :meth:`WidthScaler.search_space`). A dimension with one choice
is fixed and not sampled. Samplers that model numbers (``cmaes``, ``gp``) see each dimension
as the index into its sorted numeric choices; the others see the choices themselves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from onnxopt.config.quantization import QuantizationConfig
from onnxopt.config.search import Search
from onnxopt.errors import ConfigError, did_you_mean
from onnxopt.samplers import SAMPLERS, SpaceShape


@dataclass(frozen=True)
class Dimension:
    """One open choice: its parameter name and values."""

    name: str
    choices: tuple[Any, ...]

    @property
    def numeric(self) -> bool:
        return all(isinstance(c, int | float) and not isinstance(c, bool) for c in self.choices)


@dataclass(frozen=True)
class Choice:
    """One point of the space: quantization key values and width multipliers per group."""

    quant: dict[str, dict[str, Any]] = field(default_factory=dict)
    width: dict[str, float] = field(default_factory=dict)

    def width_key(self) -> tuple[tuple[str, float], ...]:
        """A hashable key of the width choice (Quantizers are cached per width choice)."""
        return tuple(sorted(self.width.items()))


@dataclass(frozen=True)
class SearchSpace:
    """Every dimension of a search config, plus the fixed values."""

    search: Search
    dimensions: tuple[Dimension, ...]
    fixed: dict[str, Any]
    ordinal: bool = False
    sampler: str = "tpe"
    """The sampler that runs: the config's, or brute force for a space of at most n_trials
    points (``strategy.exhaust_small_spaces``)."""

    @classmethod
    def build(
        cls, search: Search, width_space: Mapping[str, tuple[float, ...]] | None = None
    ) -> SearchSpace:
        """The space of ``search``; ``width_space`` is the scaler's group -> choices."""
        values: dict[str, tuple[Any, ...]] = {}
        if search.quantization is not None:
            for entry, layer in search.quantization.entries().items():
                for key, choices in layer.items().items():
                    values[f"q.{entry}.{key}"] = choices
        for group, choices in (width_space or {}).items():
            values[f"w.{group}"] = tuple(float(c) for c in choices)
        dims = tuple(Dimension(n, c) for n, c in values.items() if len(c) > 1)
        fixed = {n: c[0] for n, c in values.items() if len(c) == 1}
        size = math.prod(len(d.choices) for d in dims)
        strategy = search.strategy
        sampler = strategy.sampler
        if strategy.exhaust_small_spaces and dims and size <= strategy.n_trials:
            sampler = "brute-force"
        space = cls(search, dims, fixed, SAMPLERS[sampler].ordinal, sampler)
        space.check_sampler()
        return space

    def shape(self, n_trials: int) -> SpaceShape:
        """The dimensions as the trials suggest them (indices for ordinal samplers)."""
        dims = {
            d.name: tuple(range(len(d.choices))) if self.ordinal else d.choices
            for d in self.dimensions
        }
        return SpaceShape(dims, n_trials)

    def check_sampler(self) -> None:
        """Refuse samplers the space does not suit (``cmaes``/``gp`` need numeric choices).

        Raises:
            ConfigError: With the dimension that does not fit.
        """
        spec = SAMPLERS[self.sampler]
        if not self.dimensions:
            raise ConfigError("the search space has no open choice; give a list somewhere")
        if self.ordinal:
            others = ", ".join(n for n, s in SAMPLERS.items() if not s.ordinal)
            for dim in self.dimensions:
                if not dim.numeric:
                    raise ConfigError(
                        f"sampler {spec.name!r} needs numeric choices, but {dim.name} has "
                        f"{list(dim.choices)}; use one of {others} for this space"
                    )
        if len(self.dimensions) < spec.min_dimensions:
            raise ConfigError(
                f"sampler {spec.name!r} needs at least {spec.min_dimensions} open choices; "
                "use tpe"
            )

    @property
    def size(self) -> int:
        """Number of points in the space."""
        n = 1
        for dim in self.dimensions:
            n *= len(dim.choices)
        return n

    def suggest(self, trial: optuna.Trial) -> Choice:
        """Sample one point through the trial (stored as its params)."""
        params = {}
        for dim in self.dimensions:
            if self.ordinal:
                params[dim.name] = trial.suggest_int(dim.name, 0, len(dim.choices) - 1)
            else:
                params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        return self.decode(params)

    def decode(self, params: Mapping[str, Any]) -> Choice:
        """The point stored as a trial's ``params``."""
        values = dict(self.fixed)
        for dim in self.dimensions:
            value = params[dim.name]
            values[dim.name] = self._ordered(dim)[value] if self.ordinal else value
        quant: dict[str, dict[str, Any]] = {}
        width: dict[str, float] = {}
        for name, value in values.items():
            kind, _, rest = name.partition(".")
            if kind == "w":
                width[rest] = float(value)
            else:
                entry, _, key = rest.rpartition(".")
                quant.setdefault(entry, {})[key] = value
        return Choice(quant, width)

    def check_points(self, points: tuple[dict[str, Any], ...]) -> None:
        """Check points given in the config (``strategy.enqueue``) against the space.

        Raises:
            ConfigError: For an unknown parameter (closest names listed), a missing one, or a
                value that is not among its choices.
        """
        names = {d.name: d for d in self.dimensions}
        for i, point in enumerate(points):
            where = f"search.strategy.enqueue[{i}]"
            for name, value in point.items():
                if name not in names:
                    raise ConfigError(f"{where}: unknown parameter {name!r}; "
                                      f"{did_you_mean(name, names)}")  # fmt: skip
                if value not in names[name].choices:
                    raise ConfigError(f"{where}: {name} = {value!r} is not one of "
                                      f"{list(names[name].choices)}")  # fmt: skip
            missing = sorted(set(names) - set(point))
            if missing:
                raise ConfigError(f"{where}: give a value for {', '.join(missing)}")

    def obvious_points(self) -> list[dict[str, Any]]:
        """The points a search should see first (plain values per dimension, distinct):

        * the base model's default 8-bit point: every bit width 8 (the nearest choice when 8
          is not one), full width (multiplier 1.0, or the largest), quantization enabled;
        * the narrowest point: every bit width and multiplier at its smallest choice.

        Fraction widths take ``"auto"`` when it is a choice, else their first choice.
        """
        points = [{d.name: _obvious(d, narrow) for d in self.dimensions} for narrow in (0, 1)]
        return [p for i, p in enumerate(points) if p not in points[:i]]

    def encode(self, choice_params: Mapping[str, Any]) -> dict[str, Any]:
        """Plain values per dimension -> the params the study stores (for enqueueing)."""
        if not self.ordinal:
            return dict(choice_params)
        return {
            d.name: self._ordered(d).index(choice_params[d.name])
            for d in self.dimensions
            if d.name in choice_params
        }

    def quantization(self, choice: Choice) -> QuantizationConfig | None:
        """The quantization config of a point (None when the search does not quantize)."""
        if self.search.quantization is None:
            return None
        return self.search.quantization.build(choice.quant)

    @staticmethod
    def _ordered(dim: Dimension) -> list[Any]:
        return sorted(dim.choices)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON for study attrs and reports."""
        return {
            "dimensions": {d.name: list(d.choices) for d in self.dimensions},
            "fixed": dict(self.fixed),
            "size": self.size,
            "ordinal": self.ordinal,
            "sampler": self.sampler,
        }


def _obvious(dim: Dimension, narrow: int) -> Any:
    """One dimension's value at the default 8-bit point (``narrow`` 0) or the narrowest (1)."""
    choices = dim.choices
    key = dim.name.rpartition(".")[2]
    if dim.name.startswith("w."):
        return min(choices) if narrow else (1.0 if 1.0 in choices else max(choices))
    if key.endswith("_frac_width"):
        return "auto" if "auto" in choices else choices[0]
    if key.endswith("_width"):
        return min(choices) if narrow else min(choices, key=lambda c: (abs(c - 8), -c))
    if key == "enabled":
        return True if True in choices else choices[0]
    return choices[0]
