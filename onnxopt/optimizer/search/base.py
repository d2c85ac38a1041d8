"""The search's inputs: the dataset and the pristine fp32 base model.

A recipe is trained (seeded), or a factory's module built with its weights, and exported
once (checked against torch) into the run directory as ``base.onnx``; a resumed search
reads that file back, so torch is imported only when the base must be made. An ``onnx``
model is read from its file.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from onnxopt.config.search import SearchConfig
from onnxopt.data import load_dataset
from onnxopt.data.dataset import Dataset
from onnxopt.model_io import load_onnx

BASE_FILE = "base.onnx"


def load_data(config: SearchConfig) -> Dataset:
    """The config's dataset."""
    d = config.data
    return load_dataset(d.dataset, data_format=d.format, label_column=d.label_column)


def load_base(config: SearchConfig, dataset: Dataset, run_dir: Path) -> onnx.ModelProto:
    """The float base model: the ONNX file, or the recipe trained and exported into run_dir."""
    if config.model.onnx is not None:
        return load_onnx(config.model.onnx)
    path = Path(run_dir) / BASE_FILE
    if not path.is_file():
        if config.model.factory is not None:
            _export_factory(config, path)
        else:
            _train_and_export(config, dataset, path)
    return load_onnx(path)


def _export_factory(config: SearchConfig, path: Path) -> None:
    from onnxopt.exporters.torch_onnx import export_module
    from onnxopt.models.factory import load_factory

    m = config.model
    assert m.factory is not None and m.input_shape is not None
    export_module(load_factory(m.factory, m.weights), m.input_shape, path)


def _train_and_export(config: SearchConfig, dataset: Dataset, path: Path) -> None:
    from onnxopt.exporters.torch_onnx import export_module
    from onnxopt.models.training import train

    m = config.model
    assert m.recipe is not None
    trained = train(m.recipe, dataset, epochs=m.epochs, seed=m.seed, progress=False)
    export_module(trained.module, trained.input_shape, path)
