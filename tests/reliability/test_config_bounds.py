"""Items 7 and 9: every numeric config value and option has a bound a real run needs, checked at
load; ints are ints (not "20", not true). Each mistake is one line naming the key and the bound.
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path

import annotated_types as at
import pytest
from pydantic import BaseModel, Strict
from reliability_helpers import assert_one_line

import onnxopt.config.quantization as quantization
import onnxopt.config.search as search
import onnxopt.config.width as width
from onnxopt.config import load_toml
from onnxopt.config.bounds import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_REPEATS,
    MAX_SEED,
    MAX_THREADS,
    MAX_TIMEOUT_S,
    MAX_TRIALS,
    MAX_WARMUP,
)
from onnxopt.config.quantization import MAX_FRAC, QuantizationConfig
from onnxopt.config.search import load_search_config
from onnxopt.config.width import WidthConfig
from onnxopt.errors import ConfigError, UsageError

BASE = """
[model]
recipe = "digits-mlp"
{model}
[search.quantization.by_type.linear]
weight_width = [4, 8]
[search.strategy]
{strategy}
[search.evaluation]
{evaluation}
"""


def search_toml(tmp_path: Path, *, model: str = "", strategy: str = "", evaluation: str = ""):
    path = tmp_path / "s.toml"
    path.write_text(BASE.format(model=model, strategy=strategy, evaluation=evaluation))
    return path


def config_error(call, *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    line = str(info.value)
    assert "\n" not in line, line
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.mark.parametrize(
    ("table", "line", "fragments"),
    [
        ("evaluation", "threads = 100000", ("search.evaluation.threads", f"{MAX_THREADS}")),
        ("evaluation", "batch_sizes = [1, 100000000]",
         ("search.evaluation.batch_sizes", f"{MAX_BATCH_SIZE}", "100000000")),
        ("evaluation", "batch_sizes = []", ("search.evaluation.batch_sizes", "at least 1")),
        ("evaluation", "repeats = 1000000000", ("search.evaluation.repeats", f"{MAX_REPEATS}")),
        ("evaluation", "repeats = 1e9", ("search.evaluation.repeats", "valid integer")),
        ("evaluation", "warmup = 1000000000", ("search.evaluation.warmup", f"{MAX_WARMUP}")),
        ("evaluation", "min_time_s = 1e300", ("search.evaluation.min_time_s", "60")),
        ("evaluation", "min_time_s = nan", ("search.evaluation.min_time_s", "finite")),
        ("strategy", "timeout = 1e300", ("search.strategy.timeout", f"{MAX_TIMEOUT_S}")),
        ("strategy", "timeout = inf", ("search.strategy.timeout", "finite")),
        ("strategy", "seed = -1", ("search.strategy.seed", "greater than or equal to 0")),
        ("strategy", "seed = 4294967296", ("search.strategy.seed", f"{MAX_SEED}")),
        ("strategy", "n_trials = \"20\"", ("search.strategy.n_trials", "valid integer", "'20'")),
        ("strategy", "n_trials = true", ("search.strategy.n_trials", "valid integer", "True")),
        ("strategy", "n_trials = 20.0", ("search.strategy.n_trials", "valid integer")),
        ("strategy", "n_trials = 10000000", ("search.strategy.n_trials", f"{MAX_TRIALS}")),
        ("strategy", "workers = true", ("search.strategy.workers", "valid integer")),
        ("strategy", "sum_scaled_metrics = 1", ("search.strategy.sum_scaled_metrics", "boolean")),
        ("model", "epochs = 100000000", ("model.epochs", f"{MAX_EPOCHS}")),
        ("model", "seed = 4294967296", ("model.seed", f"{MAX_SEED}")),
        ("model", "seed = \"0\"", ("model.seed", "valid integer")),
    ],
)  # fmt: skip
def test_search_config_values_are_bounded(tmp_path, table, line, fragments) -> None:
    path = search_toml(tmp_path, **{table: line})
    config_error(lambda: load_search_config(path), str(path), *fragments)


def test_largest_seed_leaves_room_for_every_worker(tmp_path: Path) -> None:
    """Worker i samples with seed + i: the largest seed with 2 workers crashed the child."""
    path = search_toml(tmp_path, strategy=f"seed = {MAX_SEED}\nworkers = 2")
    config_error(lambda: load_search_config(path), "search.strategy", f"{MAX_SEED - 1}")
    ok = search_toml(tmp_path, strategy=f"seed = {MAX_SEED - 1}\nworkers = 2")
    assert load_search_config(ok).search.strategy.workers == 2


def test_command_line_overrides_are_validated(tmp_path: Path) -> None:
    path = search_toml(tmp_path, strategy=f"seed = {MAX_SEED}")
    assert load_search_config(path).search.strategy.seed == MAX_SEED
    config_error(lambda: load_search_config(path, workers=2), "--workers", f"{MAX_SEED - 1}")
    plain = search_toml(tmp_path)
    config_error(
        lambda: load_search_config(plain, n_trials=MAX_TRIALS + 1), "n_trials", f"{MAX_TRIALS}"
    )
    config = load_search_config(plain, n_trials=7, workers=3)
    assert (config.search.strategy.n_trials, config.search.strategy.workers) == (7, 3)


@pytest.mark.parametrize(
    ("shape", "fragment"), [("100000, 100000", "elements"), ("true", "valid integer")]
)
def test_factory_input_shape_is_bounded(tmp_path: Path, shape: str, fragment: str) -> None:
    path = tmp_path / "f.toml"
    path.write_text(
        f'[model]\nfactory = "torch.nn:Identity"\ninput_shape = [{shape}]\n'
        "[search.quantization.by_type.linear]\nweight_width = [4, 8]\n"
    )
    config_error(lambda: load_search_config(path), "model", fragment)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[default]\nweight_width = 8.0", ("default.weight_width", "valid integer")),
        ("[default]\nweight_width = true", ("default.weight_width", "valid integer")),
        ("[default]\nweight_frac_width = 1000", ("default.weight_frac_width", f"{MAX_FRAC}")),
        ("[default]\nweight_frac_width = \"5\"", ("default.weight_frac_width", "'auto'")),
        ("[default]\nenabled = 1", ("default.enabled", "boolean")),
        ("[calibration]\nnum_samples = true", ("calibration.num_samples", "valid integer")),
        ("[calibration]\npercentile = inf", ("calibration.percentile", "finite")),
    ],
)  # fmt: skip
def test_quantization_config_values_are_bounded(tmp_path, text, fragments) -> None:
    (tmp_path / "q.toml").write_text(text)
    config_error(lambda: load_toml(tmp_path / "q.toml", QuantizationConfig), *fragments)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("[layers.fc]\nchannel_multiplier = [true]", ("layers.fc.channel_multiplier",)),
        ("ridge = nan\n[layers.fc]\nchannel_multiplier = 0.5", ("ridge", "finite")),
    ],
)
def test_width_config_values_are_bounded(tmp_path, text, fragments) -> None:
    (tmp_path / "w.toml").write_text(text)
    config_error(lambda: load_toml(tmp_path / "w.toml", WidthConfig), *fragments)


def test_frac_bound_is_the_quantizer_limit() -> None:
    from onnxopt.optimizer.quantization.fixed_point import FRAC_LIMIT

    assert MAX_FRAC == FRAC_LIMIT


# --- every numeric field, structurally -------------------------------------------------------

PARAMETER_VALUES = {("Strategy", "enqueue")}  # checked against the search space, not here
BOUNDED_BY_VALIDATOR = {("LayerWidth", "channel_multiplier")}  # 1/64..16, with its own message


def _numeric_leaves(annotation, metadata=()):
    """(type, metadata) of every int/float/bool an annotation holds (in tuples, unions...)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        extra = [m for a in args[1:] for m in getattr(a, "metadata", [a])]
        yield from _numeric_leaves(args[0], (*metadata, *extra))
    elif origin in (typing.Union, types.UnionType, tuple, list, dict):
        for arg in args:
            if arg is not Ellipsis:
                yield from _numeric_leaves(arg, metadata if origin is typing.Union else ())
    elif annotation in (int, float, bool):
        yield annotation, metadata


def _models():
    for module in (quantization, search, width):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == (module.__name__)
            ):
                yield value


def _leaves_of(model):
    for name, field in model.model_fields.items():
        if (model.__name__, name) in PARAMETER_VALUES:
            continue
        union_meta = tuple(field.metadata)
        for kind, meta in _numeric_leaves(field.annotation):
            yield name, kind, (*union_meta, *meta)


def test_every_numeric_config_value_is_strict_and_bounded() -> None:
    checked = 0
    for model in _models():
        for name, kind, meta in _leaves_of(model):
            where = f"{model.__name__}.{name}"
            assert any(isinstance(m, Strict) or getattr(m, "strict", False) for m in meta), (
                f"{where} is not strict"
            )
            if kind is bool or (model.__name__, name) in BOUNDED_BY_VALIDATOR:
                continue
            assert any(isinstance(m, at.Ge | at.Gt) for m in meta), f"{where}: no lower bound"
            assert any(isinstance(m, at.Le | at.Lt) for m in meta), f"{where}: no upper bound"
            checked += 1
    assert checked >= 25


# --- command-line options and the training API -----------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["evaluate", "m.onnx", "--threads", "100000"], ("--threads", f"{MAX_THREADS}")),
        (["evaluate", "m.onnx", "--threads", "0"], ("--threads",)),
        (["evaluate", "m.onnx", "--batch-size", "100000000"],
         ("--batch-size", f"{MAX_BATCH_SIZE}")),
        (["train", "digits-mlp", "--epochs", "100000000", "-o", "w.pt"],
         ("--epochs", f"{MAX_EPOCHS}")),
        (["train", "digits-mlp", "--seed", "-1", "-o", "w.pt"], ("--seed", f"{MAX_SEED}")),
        (["train", "digits-mlp", "--seed", str(2**32), "-o", "w.pt"], ("--seed", f"{MAX_SEED}")),
        (["train", "digits-mlp", "--batch-size", "0", "-o", "w.pt"], ("--batch-size",)),
        (["train", "digits-mlp", "--lr", "-1", "-o", "w.pt"], ("--lr",)),
        (["train", "digits-mlp", "--lr", "nan", "-o", "w.pt"], ("learning rate", "nan")),
    ],
)  # fmt: skip
def test_command_line_options_are_bounded(cli, args, fragments) -> None:
    assert_one_line(cli(*args), *fragments)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": MAX_EPOCHS + 1},
        {"batch_size": MAX_BATCH_SIZE + 1},
        {"seed": -1},
        {"seed": MAX_SEED + 1},
        {"learning_rate": math.nan},
        {"learning_rate": 0.0},
        {"epochs": True},
    ],
)
def test_train_refuses_out_of_range_arguments(digits, kwargs) -> None:
    from onnxopt.models.training import train

    with pytest.raises(UsageError) as info:
        train("digits-mlp", digits, progress=False, **kwargs)
    assert "\n" not in str(info.value)
    assert next(iter(kwargs)).replace("_", " ") in str(info.value)


# --- a batch that fits the bound can still be too big for the memory ------------------------


def test_batch_bytes_are_checked_against_the_memory() -> None:
    import numpy as np

    from onnxopt.data.shaping import MAX_BATCH_BYTES, check_batch_bytes

    digits = np.zeros((10, 64), np.float32)
    assert check_batch_bytes(digits, MAX_BATCH_SIZE, available=2**34) == MAX_BATCH_SIZE * 256
    images = np.zeros((10, 3, 224, 224), np.float32)  # 588 KiB per sample
    with pytest.raises(UsageError) as info:
        check_batch_bytes(images, MAX_BATCH_SIZE, available=2**34)
    line = str(info.value)
    assert "batch size 65,536" in line and "36.8 GiB" in line and "<= 1,783" in line, line
    assert MAX_BATCH_BYTES // (3 * 224 * 224 * 4) == 1783
    with pytest.raises(UsageError, match="<= 174"):  # half of 200 MiB free, not 1 GiB
        check_batch_bytes(images, 1024, available=200 << 20)
