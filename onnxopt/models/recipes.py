"""Reference model recipes: digits MLP/CNN/wide, the lab's JSC family, a diabetes regressor
and a sentence encoder.

A recipe is a named factory ``(in_features, num_classes) -> nn.Module``; the registry
below is the one place that lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from onnxopt.data.registry import BUNDLED
from onnxopt.errors import UsageError, did_you_mean
from onnxopt.models.encoder import sentence_encoder

UNBUNDLED_DATA = {
    "jsc": (
        "the JSC jet-tagging data, which is not bundled; pass --data with a JSC file: the "
        "OpenML hls4ml_lhc_jets_hlf table (.parquet, or .csv with a jet_type column) or the "
        "hls4ml .h5 file with the t_allpar_new table"
    ),
}
"""Default datasets of recipes that are not bundled: what they are and how to pass them."""


@dataclass(frozen=True)
class Recipe:
    """A reference model: its name, what it is, the input layout it wants and its factory.

    ``default_dataset`` is what ``onnxopt train`` uses without ``--data``: a bundled dataset
    name, or a key of :data:`UNBUNDLED_DATA` (then ``--data`` is required).
    """

    name: str
    description: str
    build: Callable[[int, int], nn.Module]
    task: str = "classification"
    """What it is trained for (a key of :data:`onnxopt.metrics.TASKS`): classification,
    regression or embedding (trained through a topic head, exported without it)."""
    image_input: bool = False
    default_dataset: str = "digits"
    epochs: int = 40
    learning_rate: float = 3e-3


def _mlp(sizes: list[int], *, batchnorm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            if batchnorm:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def digits_mlp(in_features: int, num_classes: int) -> nn.Module:
    """64-64-32-10 with BatchNorm and ReLU after each hidden Linear."""
    return _mlp([in_features, 64, 32, num_classes], batchnorm=True)


def digits_wide(in_features: int, num_classes: int) -> nn.Module:
    """64-1024-1024-1024-10, deliberately over-wide (speed and width-scaling work)."""
    return _mlp([in_features, 1024, 1024, 1024, num_classes], batchnorm=False)


def _image_side(in_features: int) -> int:
    side = int(round(in_features**0.5))
    if side * side != in_features:
        raise UsageError(
            f"digits-cnn needs square single-channel images; {in_features} features is not a square"
        )
    return side


class DigitsCNN(nn.Module):
    """Three small conv blocks, global average pooling and a linear head; input (N, 1, H, W)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.side = _image_side(in_features)

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.features = nn.Sequential(
            *block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64), nn.AdaptiveAvgPool2d(1)
        )
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):  # noqa: D102 - torch forward
        return self.head(self.features(x).flatten(1))


def jsc_tiny(in_features: int, num_classes: int) -> nn.Module:
    """The lab's JSC-Tiny: BN16-ReLU-Linear(16,5)-ReLU."""
    return nn.Sequential(
        nn.BatchNorm1d(in_features), nn.ReLU(), nn.Linear(in_features, num_classes), nn.ReLU()
    )


def jsc_toy(in_features: int, num_classes: int) -> nn.Module:
    """The lab's JSC-Toy: BN16-ReLU-Linear(16,8)-BN-ReLU-Linear(8,8)-BN-ReLU-Linear(8,5)-BN-ReLU."""
    return nn.Sequential(
        nn.BatchNorm1d(in_features), nn.ReLU(),
        nn.Linear(in_features, 8), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Linear(8, num_classes), nn.BatchNorm1d(num_classes), nn.ReLU(),
    )  # fmt: skip


def jsc_three_linear_layers(in_features: int, num_classes: int) -> nn.Module:
    """The lab's JSC three-linear-layers model (the width-scaling experiment's subject)."""
    return nn.Sequential(
        nn.BatchNorm1d(in_features), nn.ReLU(),
        nn.Linear(in_features, 16), nn.ReLU(),
        nn.Linear(16, 16), nn.ReLU(),
        nn.Linear(16, num_classes), nn.ReLU(),
    )  # fmt: skip


def jsc_s(in_features: int, num_classes: int) -> nn.Module:
    """The lab's JSC-S: 16-64-32-32-32-5 with BatchNorm on the input and the output layer."""
    return nn.Sequential(
        nn.BatchNorm1d(in_features), nn.ReLU(),
        nn.Linear(in_features, 64), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Linear(64, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, 32), nn.ReLU(),
        nn.Linear(32, num_classes), nn.BatchNorm1d(num_classes), nn.ReLU(),
    )  # fmt: skip


def diabetes_mlp(in_features: int, num_classes: int) -> nn.Module:
    """10-64-32-1 with ReLU: one regression output (``num_classes`` is the output count)."""
    return _mlp([in_features, 64, 32, num_classes], batchnorm=False)


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("digits-mlp", "64-64-32-10 MLP with BatchNorm and ReLU", digits_mlp),
        Recipe("digits-cnn", "3 conv blocks + global pooling + linear head", DigitsCNN,
               image_input=True, epochs=30),
        Recipe("digits-wide", "64-1024-1024-1024-10 over-wide MLP", digits_wide,
               epochs=25, learning_rate=1e-3),
        Recipe("jsc-tiny", "BN16-ReLU-Linear(16,5)-ReLU", jsc_tiny, default_dataset="jsc"),
        Recipe("jsc-toy", "16-8-8-5 with BatchNorm", jsc_toy, default_dataset="jsc"),
        Recipe("jsc-three-linear-layers", "16-16-16-5 with ReLU", jsc_three_linear_layers,
               default_dataset="jsc"),
        Recipe("jsc-s", "16-64-32-32-32-5 with BatchNorm in and out", jsc_s, default_dataset="jsc"),
        Recipe("diabetes-mlp", "10-64-32-1 regression MLP (ReLU)", diabetes_mlp,
               task="regression", default_dataset="diabetes", epochs=30, learning_rate=5e-3),
        Recipe("sentence-encoder", "2-layer TransformerEncoder (d=64), int64 ids + mask, "
               "mean pooling", sentence_encoder, task="embedding",
               default_dataset="token-corpus", epochs=4, learning_rate=2e-3),
    )
}  # fmt: skip


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; an unknown name is a usage error with the closest names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(f"unknown recipe {name!r}; {did_you_mean(name, RECIPES)}") from None


def default_data(recipe: Recipe) -> str:
    """The dataset spec a recipe trains on when none is given: its bundled default dataset.

    Raises:
        UsageError: The recipe's dataset is not bundled (the JSC recipes): pass --data.
    """
    if recipe.default_dataset in BUNDLED:
        return recipe.default_dataset
    what = UNBUNDLED_DATA.get(recipe.default_dataset, f"{recipe.default_dataset!r}, not bundled")
    raise UsageError(f"recipe {recipe.name!r} trains on {what}")
