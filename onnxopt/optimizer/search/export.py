"""Export chosen trials: rebuild from params, write ONNX, ORT format and the config as JSON.

Candidates are rebuilt from the trial's params on the pristine base (never read back from
a cache), checked against the stored model hash, and scored on the TEST split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import FrozenTrial

from onnxopt.atomic import atomic_path, write_text
from onnxopt.config.search import SearchExport
from onnxopt.model_io import save_onnx
from onnxopt.optimizer.evaluate.session import ort_errors, session_options
from onnxopt.optimizer.search.candidate import CandidateBuilder, model_hash
from onnxopt.optimizer.search.measure import Evaluator
from onnxopt.optimizer.search.space import SearchSpace


@dataclass(frozen=True)
class ExportedTrial:
    """Files written for one trial and its test-split scores."""

    number: int
    onnx_path: Path
    ort_path: Path | None
    config_path: Path
    test_accuracy: float
    test_loss: float
    size_bytes: int
    hash_matches: bool
    fpga: dict | None = None
    """``[search.export] formats`` qonnx / hls4ml: what was written (see onnxopt.fpga)."""

    def as_dict(self) -> dict:
        """Plain JSON."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in vars(self).items()}


def save_ort(onnx_path: Path, ort_path: Path) -> Path:
    """Convert an ONNX file to ORT format (what ``convert_onnx_models_to_ort`` does, basic
    optimizations for portability), written atomically."""
    import onnxruntime as ort

    options = session_options(1, "basic")
    options.add_session_config_entry("session.save_model_format", "ORT")
    with atomic_path(ort_path) as tmp:
        options.optimized_model_filepath = str(tmp)
        with ort_errors(f"convert {onnx_path.name} to ORT format"):
            ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return ort_path


def export_trial(
    trial: FrozenTrial,
    space: SearchSpace,
    builder: CandidateBuilder,
    test: Evaluator,
    folder: Path,
    *,
    ort_format: bool = True,
    export: SearchExport | None = None,
    strict: bool = False,
) -> ExportedTrial:
    """Rebuild one trial's candidate and write ``trial_<n>.onnx``, ``.ort`` and ``.json``
    (and the QONNX / hls4ml files ``export.formats`` asks for; ``strict``: fail on them)."""
    candidate = builder.build(space, space.decode(trial.params))
    stem = Path(folder) / f"trial_{trial.number:04d}"
    onnx_path = save_onnx(candidate.model, stem.with_suffix(".onnx"))
    data = onnx_path.read_bytes()
    ort_format = ort_format and (export is None or "ort" in export.formats)
    ort_path = save_ort(onnx_path, stem.with_suffix(".ort")) if ort_format else None
    fpga = None
    if export is not None and {"qonnx", "hls4ml"} & set(export.formats):
        from onnxopt.fpga.trial_export import export_fpga

        fpga = export_fpga(
            candidate.model, stem, export.formats, export.hls4ml, test.split.x, strict=strict
        )
    scores = test.measure(candidate.model, latency=False).metrics
    info = {
        "trial": trial.number,
        "params": dict(trial.params),
        **candidate.config_dict(),
        "validation_metrics": trial.user_attrs.get("metrics", {}),
        "test_accuracy": scores["accuracy"],
        "test_loss": scores["loss"],
        **({"fpga": fpga} if fpga else {}),
    }
    config_path = write_text(stem.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    return ExportedTrial(
        number=trial.number,
        onnx_path=onnx_path,
        ort_path=ort_path,
        config_path=config_path,
        test_accuracy=scores["accuracy"],
        test_loss=scores["loss"],
        size_bytes=len(data),
        hash_matches=model_hash(data) == trial.user_attrs.get("model_sha256"),
        fpga=fpga,
    )
