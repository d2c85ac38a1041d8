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
from onnxopt.errors import UsageError
from onnxopt.model_io import load_onnx

BASE_FILE = "base.onnx"
MIN_FREE_BYTES = 64 * 2**20
"""Free space a search needs beyond what its base model takes (journal, reports, models)."""


def prepare_run_dir(run_dir: Path, model_bytes: int = 0) -> Path:
    """Create the run directory and check, before any work, that a search can write there.

    Args:
        run_dir: The run directory.
        model_bytes: The base model's size; exported candidates take up to a few times it.

    Raises:
        UsageError: When the directory cannot be created or written, or its disk is (nearly)
            full.
    """
    import shutil
    import tempfile

    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise UsageError(
            f"run directory {run_dir} is not writable ({exc.strerror or exc}); "
            "choose another --run-dir"
        ) from None
    need = MIN_FREE_BYTES + 4 * model_bytes
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise UsageError(
            f"only {free / 2**20:.0f} MiB free on the disk of {run_dir}, a search needs about "
            f"{need / 2**20:.0f} MiB; free some space or choose another --run-dir"
        )
    return run_dir


def load_data(config: SearchConfig) -> Dataset:
    """The config's dataset."""
    d = config.data
    return load_dataset(d.dataset, data_format=d.format, label_column=d.label_column)


def load_base(
    config: SearchConfig, dataset: Dataset, run_dir: Path
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """The float base model (the ONNX file prepared, or the recipe trained and exported into
    run_dir) and what preparing a user's file changed, one note each."""
    if config.model.onnx is not None:
        from onnxopt.exporters.user_model import load_user_model
        from onnxopt.optimizer.quantization.qdq_pass import DEFAULT_OPSET

        prepared = load_user_model(config.model.onnx, config.model.preparation(DEFAULT_OPSET))
        return prepared.model, prepared.notes
    path = Path(run_dir) / BASE_FILE
    if not path.is_file():
        if config.model.factory is not None:
            _export_factory(config, path)
        else:
            _train_and_export(config, dataset, path)
    return load_onnx(path), ()


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
