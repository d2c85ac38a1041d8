"""Deterministic training of a recipe on a dataset, and the weights file it writes."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import numpy as np
import torch
from torch import nn

from onnxopt.atomic import atomic_path
from onnxopt.config import bounds
from onnxopt.data.dataset import MAX_CLASSES, Dataset
from onnxopt.errors import ModelLoadError, UsageError
from onnxopt.models.recipes import Recipe, get_recipe

WEIGHTS_FORMAT = 1


@dataclass(frozen=True)
class TrainedModel:
    """A trained recipe: the module (eval mode) and what is needed to rebuild it.

    ``val_score`` is the best validation ``val_metric``: accuracy for classifiers, mse for
    regressors, the topic head's accuracy for the encoder. ``sample`` holds named input rows
    for modules with several inputs (the exporter traces and checks on them).
    """

    recipe: str
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    val_score: float
    epochs: int
    seed: int
    val_metric: str = "accuracy"
    sample: dict[str, np.ndarray] | None = None


def input_shape_for(recipe: Recipe, dataset: Dataset) -> tuple[int, ...]:
    """The per-sample input shape a recipe wants for a dataset (images for CNNs; the first
    input's for named inputs)."""
    if dataset.train.named:
        return tuple(next(iter(dataset.train.arrays().values())).shape[1:])
    if recipe.image_input:
        side = int(round(dataset.num_features**0.5))
        return (1, side, side)
    return (dataset.num_features,)


def _tensor(x: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), *shape))


def train(
    recipe_name: str,
    dataset: Dataset,
    *,
    epochs: int | None = None,
    batch_size: int = 64,
    learning_rate: float | None = None,
    seed: int = 0,
    progress: bool = True,
) -> TrainedModel:
    """Train a recipe with Adam; deterministic for a given seed on one machine.

    The weights of the epoch with the best validation score are kept (accuracy; mse for
    regressors; the topic head's accuracy for the encoder). Runs on one torch thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: threads only contend (and the result is the same)
    try:
        return _train(recipe_name, dataset, epochs, batch_size, learning_rate, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _train(recipe_name, dataset, epochs, batch_size, learning_rate, seed, progress) -> TrainedModel:
    from tqdm.auto import tqdm

    recipe = get_recipe(recipe_name)
    epochs = epochs if epochs is not None else recipe.epochs
    _check_arguments(epochs, batch_size, learning_rate, seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    task = _task_for(recipe, dataset)
    module, head = task.build(recipe, dataset)
    lr = recipe.learning_rate if learning_rate is None else learning_rate
    trained = [p for m in (module, head) if m is not None for p in m.parameters()]
    optimizer = torch.optim.Adam(trained, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    x_train, y_train = task.inputs(recipe, dataset, "train"), torch.from_numpy(dataset.train.y)
    x_val = task.inputs(recipe, dataset, "val")
    generator = torch.Generator().manual_seed(seed)
    best, best_state = -math.inf, None
    bar = tqdm(
        range(epochs), desc=f"train {recipe_name}", disable=None if progress else True, unit="epoch"
    )
    full = _WithHead(module, head) if head is not None else module
    for _ in bar:
        full.train()
        for idx in torch.randperm(len(y_train), generator=generator).split(batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            optimizer.zero_grad()
            loss = task.loss(full(*(x[idx] for x in x_train)), y_train[idx])
            loss.backward()
            optimizer.step()
        schedule.step()
        score = task.score(full, x_val, dataset.val.y)
        if score > best:
            best = score
            best_state = {k: v.detach().clone() for k, v in full.state_dict().items()}
        bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{abs(score):.4f}")
    assert best_state is not None
    full.load_state_dict(best_state)
    module.eval()
    sample = dict(dataset.val.arrays()) if dataset.val.named else None
    return TrainedModel(
        recipe_name, module, input_shape_for(recipe, dataset), dataset.num_classes or 1,
        abs(best), epochs, seed, task.metric, sample,
    )  # fmt: skip


@dataclass(frozen=True)
class _Task:
    """How a recipe of one task is trained: its loss and its validation score (higher is
    better; the mse is negated)."""

    metric: str
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    score: Callable[[nn.Module, tuple[torch.Tensor, ...], np.ndarray], float]
    with_head: bool = False

    def build(self, recipe: Recipe, dataset: Dataset) -> tuple[nn.Module, nn.Module | None]:
        if self.with_head:  # the encoder: a linear topic head over the embedding, dropped later
            module = recipe.build(0, dataset.num_classes or 1)
            dim = module(*(torch.from_numpy(a[:2]) for a in dataset.train.arrays().values()))
            return module, nn.Linear(dim.shape[1], dataset.num_classes or 1)
        outputs = dataset.num_classes if self.metric == "accuracy" else 1
        return recipe.build(dataset.num_features, outputs or 1), None

    def inputs(self, recipe: Recipe, dataset: Dataset, split: str) -> tuple[torch.Tensor, ...]:
        part = dataset.split(split)
        if part.named:
            return tuple(torch.from_numpy(a) for a in part.arrays().values())
        return (_tensor(part.array(), input_shape_for(recipe, dataset)),)


class _WithHead(nn.Module):
    """``head(module(*inputs))``: nn.Sequential passes one input only."""

    def __init__(self, module: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.module, self.head = module, head

    def forward(self, *inputs):  # noqa: D102 - torch forward
        return self.head(self.module(*inputs))


def _scores(module: nn.Module, x: tuple[torch.Tensor, ...]) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module(*x)


def _class_score(module, x, y) -> float:
    return float((_scores(module, x).argmax(dim=1).numpy() == y).mean())


def _neg_mse(module, x, y) -> float:
    return -float(
        np.mean((_scores(module, x).numpy().reshape(len(y), -1) - y.reshape(len(y), -1)) ** 2)
    )


def _mse_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(out.reshape(len(y), -1), y.reshape(len(y), -1))


_TASKS = {
    "classification": _Task("accuracy", nn.functional.cross_entropy, _class_score),
    "regression": _Task("mse", _mse_loss, _neg_mse),
    "embedding": _Task("topic_accuracy", nn.functional.cross_entropy, _class_score, True),
}


def _task_for(recipe: Recipe, dataset: Dataset) -> _Task:
    wanted = "classes" if recipe.task in ("classification", "embedding") else "values"
    if dataset.labels != wanted:
        have = dataset.labels or "no labels"
        raise UsageError(
            f"recipe {recipe.name!r} ({recipe.task}) trains on "
            f"{'class labels' if wanted == 'classes' else 'regression targets'}, but "
            f"{dataset.name!r} has {have}; use its default dataset {recipe.default_dataset!r}"
        )
    return _TASKS[recipe.task]


def _check_arguments(epochs: int, batch_size: int, learning_rate: float | None, seed: int) -> None:
    """The bounds of :mod:`onnxopt.config.bounds`, for callers that bypass the CLI's."""
    for what, value, low, high in (
        ("epochs", epochs, 1, bounds.MAX_EPOCHS),
        ("batch size", batch_size, 1, bounds.MAX_BATCH_SIZE),
        ("seed", seed, 0, bounds.MAX_SEED),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UsageError(f"{what} must be an integer in {low}..{high:,}, got {value!r}")
    if learning_rate is not None and not 0 < learning_rate <= bounds.MAX_LEARNING_RATE:
        raise UsageError(
            f"learning rate must be in (0, {bounds.MAX_LEARNING_RATE:g}], got {learning_rate!r}"
        )


def save_weights(trained: TrainedModel, path: Path) -> None:
    """Write the state dict and what rebuilds the model, atomically (temp file, then rename)."""
    payload = {
        "format": WEIGHTS_FORMAT,
        "recipe": trained.recipe,
        "input_shape": list(trained.input_shape),
        "num_classes": trained.num_classes,
        "val_accuracy": trained.val_score,
        "val_metric": trained.val_metric,
        "seed": trained.seed,
        "state_dict": trained.module.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_HOW_TO_SAVE = (
    "expected a state dict saved with torch.save(model.state_dict(), 'weights.pt') "
    "or a file written by 'onnxopt train'"
)


def _read(path: Path | str):
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        if found := _UNSAFE_GLOBAL.search(str(exc)):  # a whole pickled module, or worse
            raise ModelLoadError(
                f"{path} holds a pickled {found.group(1)}, not only tensors; onnxopt loads "
                f"with weights_only=True so no code runs from the file; {_HOW_TO_SAVE}"
            ) from None
        raise ModelLoadError(f"{path} is not a torch weights file; {_HOW_TO_SAVE}") from None


def load_weights(path: Path | str, recipe_name: str | None = None) -> TrainedModel:
    """Rebuild a trained recipe from a weights file, loaded with ``weights_only=True``.

    Args:
        path: A file written by ``onnxopt train`` (:func:`save_weights`).
        recipe_name: The recipe, when the file does not name it.

    Raises:
        ModelLoadError: A missing or unreadable file, or weights that do not fit the recipe.
        UsageError: An unknown recipe name.
    """
    path = Path(path)
    payload = _read(path)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise ModelLoadError(
            f"{path} is not an onnxopt weights file (no 'state_dict'); "
            "pass a file written by 'onnxopt train'"
        )
    name = recipe_name or payload.get("recipe")
    if not name:
        raise ModelLoadError(f"{path} does not say which recipe it belongs to; pass --recipe")
    recipe = get_recipe(name)
    shape, num_classes = _shape_and_classes(payload, path)
    module = recipe.build(int(np.prod(shape)), num_classes)
    try:
        module.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{path} does not fit recipe {name!r}: {str(exc).splitlines()[0]}"
        ) from None
    module.eval()
    return TrainedModel(
        name,
        module,
        shape,
        num_classes,
        float(payload.get("val_accuracy", float("nan"))),
        0,
        int(payload.get("seed", 0)),
        str(payload.get("val_metric", "accuracy")),
    )


MAX_FEATURES = 65_536
"""Features per sample a recipe is built for from a weights file (digits 64, JSC 16): the file
is data, and its layers are allocated from these numbers before the weights are checked."""


def _shape_and_classes(payload: dict, path: Path) -> tuple[tuple[int, ...], int]:
    """The input shape and class count a weights file names, checked before building on them."""
    shape, classes = payload.get("input_shape"), payload.get("num_classes")
    fix = "pass a file written by 'onnxopt train'"
    ints = isinstance(shape, list | tuple) and all(_is_int(d) and d > 0 for d in shape)
    if not ints or not shape:
        raise ModelLoadError(f"{path}: input_shape {shape!r:.60} is not a list of sizes; {fix}")
    if math.prod(shape) > MAX_FEATURES:
        raise ModelLoadError(
            f"{path}: input_shape {list(shape)} means {math.prod(shape):,} features, more than "
            f"the {MAX_FEATURES:,} a recipe takes; {fix}"
        )
    if not (_is_int(classes) and 1 <= classes <= MAX_CLASSES):
        raise ModelLoadError(
            f"{path}: num_classes {classes!r:.60} is not a class count in 1..{MAX_CLASSES:,}; {fix}"
        )
    return tuple(int(d) for d in shape), int(classes)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def load_state_dict(path: Path | str) -> dict:
    """A plain state dict (or the one inside an onnxopt weights file), ``weights_only=True``."""
    payload = _read(path)
    if isinstance(payload, dict) and "state_dict" in payload:
        payload = payload["state_dict"]
    if not isinstance(payload, dict):
        raise ModelLoadError(
            f"{path} holds a {type(payload).__name__}, not a state dict; {_HOW_TO_SAVE}"
        )
    return payload
