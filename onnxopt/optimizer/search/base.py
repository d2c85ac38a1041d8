"""The search's inputs: the dataset and the pristine fp32 base model.

A recipe is trained (seeded), or a factory's module built with its weights, and exported
once (checked against torch) into the run directory as ``base.onnx``, recorded in
``base.json`` (what it was made from, its sha256); a resumed search checks both and reads
the file back, so torch is imported only when the base must be made, and a run directory
never silently serves another config's base model. An ``onnx`` model is read from its file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from onnxopt.atomic import atomic_path, write_text
from onnxopt.config.search import SearchConfig
from onnxopt.data import load_dataset
from onnxopt.data.dataset import Dataset
from onnxopt.errors import UsageError
from onnxopt.model_io import file_sha256, load_onnx

BASE_FILE = "base.onnx"
BASE_RECORD = "base.json"
def load_data(config: SearchConfig) -> Dataset:
    """The config's dataset."""
    d = config.data
    return load_dataset(d.dataset, data_format=d.format, label_column=d.label_column)


def base_source(config: SearchConfig, dataset: Dataset) -> dict[str, Any] | None:
    """What ``base.onnx`` is made from (None for an ONNX file, which is read in place).

    A recipe: its name, seed, epochs and the data's fingerprint; a factory: its name, the
    weights file's sha256 and the input shape. Two configs with the same source make the
    same base model (deterministically, on one platform).
    """
    m = config.model
    if m.onnx is not None:
        return None
    if m.factory is not None:
        weights = None if m.weights is None else file_sha256(m.weights)
        return {"factory": m.factory, "weights_sha256": weights,
                "input_shape": list(m.input_shape or ())}  # fmt: skip
    return {"recipe": m.recipe, "seed": m.seed, "epochs": m.epochs,
            "data_fingerprint": dataset.fingerprint()}  # fmt: skip


def _describe(source: dict[str, Any]) -> str:
    if "recipe" in source:
        epochs = source["epochs"] or "default"
        return f"recipe {source['recipe']!r}, seed {source['seed']}, epochs {epochs}"
    return f"factory {source['factory']!r}, input shape {source['input_shape']}"


def check_base(
    config: SearchConfig, dataset: Dataset, run_dir: Path, expected_sha256: str | None = None
) -> None:
    """Refuse a run directory whose ``base.onnx`` belongs to another model, or changed.

    Reads only. ``base.json`` beside ``base.onnx`` records what it was made from and its
    sha256; a base file without that record (an earlier onnxopt's) is accepted only when it
    is the model ``expected_sha256`` (the stored study's) names.

    Raises:
        UsageError: Naming both sources, or the changed file, and the way out.
    """
    source = base_source(config, dataset)
    path = Path(run_dir) / BASE_FILE
    if source is None or not path.is_file():
        return
    record = _record(Path(run_dir))
    way_out = "choose another --run-dir, or pass --restart to move the previous search aside"
    if record is None:
        if expected_sha256 is not None and file_sha256(path) == expected_sha256:
            return
        raise UsageError(
            f"{path} has no {BASE_RECORD} saying which model it is (an earlier onnxopt's, or a "
            f"run killed while writing it); {way_out}"
        )
    if record.get("source") != source:
        raise UsageError(
            f"{path} is the base model of another config ({_describe(record['source'])}; this "
            f"config: {_describe(source)}); {way_out}"
        )
    if file_sha256(path) != record.get("sha256"):
        raise UsageError(
            f"{path} changed since it was written (its sha256 is not the one in {BASE_RECORD}); "
            f"{way_out}"
        )


def _record(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / BASE_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UsageError(
            f"{path} is damaged (not JSON); pass --restart to move the previous search aside"
        ) from None
    return record if isinstance(record, dict) else None


def load_base(
    config: SearchConfig,
    dataset: Dataset,
    run_dir: Path,
    expected_sha256: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """The float base model and what preparing a user's file changed, one note each.

    An ONNX file is prepared in memory. A recipe is trained (or a factory's module built)
    and exported once into ``run_dir/base.onnx`` with ``base.json`` (what it was made from,
    its sha256); later runs check both (:func:`check_base`) and read the file, never
    writing it again.

    Args:
        config: The search config.
        dataset: Its dataset.
        run_dir: The run directory.
        expected_sha256: The stored study's base model (accepts a base file without record).
        progress: Receives a line before and after the long steps (training, export).
    """
    if config.model.onnx is not None:
        from onnxopt.exporters.user_model import load_user_model
        from onnxopt.optimizer.quantization.qdq_pass import DEFAULT_OPSET

        prepared = load_user_model(config.model.onnx, config.model.preparation(DEFAULT_OPSET))
        return prepared.model, prepared.notes
    check_base(config, dataset, run_dir, expected_sha256)
    path = Path(run_dir) / BASE_FILE
    if not path.is_file():
        _make_base(config, dataset, path, progress or _quiet)
    return load_onnx(path), ()


def _quiet(_: str) -> None:
    """Discards progress lines."""


def _make_base(
    config: SearchConfig, dataset: Dataset, path: Path, progress: Callable[[str], None]
) -> None:
    """Export the base model to a temporary file, record it, then move it into place (a kill
    leaves either no base.onnx or a complete one with its record)."""
    source = base_source(config, dataset)
    assert source is not None
    with atomic_path(path) as tmp:
        if config.model.factory is not None:
            progress(f"exporting factory {config.model.factory} to ONNX")
            _export_factory(config, tmp)
        else:
            _train_and_export(config, dataset, tmp, progress)
        record = {"source": source, "sha256": file_sha256(tmp)}
        write_text(path.with_name(BASE_RECORD), json.dumps(record, indent=2) + "\n")
    progress(f"base model -> {path}")


def _export_factory(config: SearchConfig, path: Path) -> None:
    from onnxopt.exporters.torch_onnx import export_module
    from onnxopt.models.factory import load_factory

    m = config.model
    assert m.factory is not None and m.input_shape is not None
    export_module(load_factory(m.factory, m.weights), m.input_shape, path)


def _train_and_export(
    config: SearchConfig, dataset: Dataset, path: Path, progress: Callable[[str], None]
) -> None:
    import time

    from onnxopt.exporters.torch_onnx import export_module
    from onnxopt.models.training import train

    m = config.model
    assert m.recipe is not None
    epochs = f"{m.epochs} epochs" if m.epochs else "its default epochs"
    progress(f"training {m.recipe} on {dataset.name} (seed {m.seed}, {epochs})")
    start = time.perf_counter()
    trained = train(m.recipe, dataset, epochs=m.epochs, seed=m.seed, progress=False)
    progress(
        f"trained {m.recipe} in {time.perf_counter() - start:.1f} s: validation "
        f"{trained.val_metric} {trained.val_score:.4f} after {trained.epochs} epochs; exporting "
        "to ONNX"
    )
    if trained.sample is not None:  # several named inputs (the encoder's ids and mask)
        from onnxopt.exporters.torch_named import export_named

        export_named(trained.module, trained.sample, path, output_name="embedding")
        return
    export_module(trained.module, trained.input_shape, path)
