"""Deterministic training of a recipe on a dataset, and the weights file it writes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import numpy as np
import torch
from torch import nn

from onnxopt.atomic import atomic_path
from onnxopt.config import bounds
from onnxopt.data.dataset import MAX_CLASSES, Dataset
from onnxopt.errors import DataError, ModelLoadError, UsageError
from onnxopt.models.recipes import Recipe, get_recipe

WEIGHTS_FORMAT = 1


@dataclass(frozen=True)
class TrainedModel:
    """A trained recipe: the module (eval mode) and what is needed to rebuild it."""

    recipe: str
    module: nn.Module
    input_shape: tuple[int, ...]
    num_classes: int
    val_accuracy: float
    epochs: int
    seed: int


def input_shape_for(recipe: Recipe, dataset: Dataset) -> tuple[int, ...]:
    """The per-sample input shape a recipe wants for a dataset (images for CNNs)."""
    if recipe.image_input:
        side = int(round(dataset.num_features**0.5))
        return (1, side, side)
    return (dataset.num_features,)


def _tensor(x: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), *shape))


def _accuracy(module: nn.Module, x: torch.Tensor, y: np.ndarray) -> float:
    module.eval()
    with torch.no_grad():
        pred = module(x).argmax(dim=1).numpy()
    return float((pred == y).mean())


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

    The weights of the epoch with the best validation accuracy are kept.

    Raises:
        DataError: The data have no class labels.
    """
    from tqdm.auto import tqdm

    recipe = get_recipe(recipe_name)
    epochs = epochs if epochs is not None else recipe.epochs
    _check_arguments(epochs, batch_size, learning_rate, seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    shape = input_shape_for(recipe, dataset)
    classes, y_train_labels, y_val = _class_labels(dataset)
    module = recipe.build(dataset.num_features, classes)
    lr = recipe.learning_rate if learning_rate is None else learning_rate
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    x_train, y_train = _tensor(dataset.train.array(), shape), torch.from_numpy(y_train_labels)
    x_val = _tensor(dataset.val.array(), shape)
    generator = torch.Generator().manual_seed(seed)
    best_acc, best_state = -1.0, None
    bar = tqdm(
        range(epochs), desc=f"train {recipe_name}", disable=None if progress else True, unit="epoch"
    )
    for _ in bar:
        module.train()
        for idx in torch.randperm(len(x_train), generator=generator).split(batch_size):
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(module(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
        schedule.step()
        acc = _accuracy(module, x_val, y_val)
        if acc > best_acc:
            best_acc = acc
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        bar.set_postfix(loss=f"{loss.item():.3f}", val_acc=f"{acc:.4f}", best=f"{best_acc:.4f}")
    assert best_state is not None
    module.load_state_dict(best_state)
    module.eval()
    return TrainedModel(recipe_name, module, shape, classes, best_acc, epochs, seed)


def _class_labels(dataset: Dataset) -> tuple[int, np.ndarray, np.ndarray]:
    """The class count and the training and validation labels (every recipe is a classifier)."""
    classes, y_train, y_val = dataset.num_classes, dataset.train.y, dataset.val.y
    if classes is None or y_train is None or y_val is None:
        raise DataError(
            f"{dataset.name}: the data have no class labels; the recipes are classifiers, so "
            "give integer class labels"
        )
    return classes, y_train, y_val


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
        "val_accuracy": trained.val_accuracy,
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
