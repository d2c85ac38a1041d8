"""Export chosen trials: rebuild from params, write the files that ship, measure those files.

Candidates are rebuilt from the trial's params on the pristine base (never read back from a
cache) and checked against the stored model hash. Each trial gets ``trial_<n>.onnx``, its
ORT-format twin ``trial_<n>.ort`` with the operator config of a reduced build, and
``trial_<n>.json``. The figures reported are those of the written files, read back from disk
and run on the test split: accuracy, loss, size on disk and latency of the ``.onnx`` *and*
of the ``.ort``, which must compute the same outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial

from onnxopt import metrics as registry
from onnxopt.atomic import write_text
from onnxopt.config.search import SearchExport
from onnxopt.errors import UsageError
from onnxopt.model_io import save_onnx
from onnxopt.optimizer.evaluate.measure import LatencyPlan, Measurement, Measurer
from onnxopt.optimizer.evaluate.verify import VerifyReport, verify_model
from onnxopt.optimizer.search.candidate import CandidateBuilder, model_hash
from onnxopt.optimizer.search.space import SearchSpace
from onnxopt.report.card import deployment_card, write_card
from onnxopt.report.versions import package_versions
from onnxopt.runtime.kernels import kernel_facts
from onnxopt.runtime.ort_format import save_ort_format


@dataclass(frozen=True)
class ExportedTrial:
    """Files written for one trial and what they measure on the test split.

    Attributes:
        number: The trial number.
        onnx_path: The ONNX file.
        ort_path: The ORT-format file (None when not written).
        operators_path: The reduced-build operator/type config of the ``.ort``.
        config_path: The trial's JSON (params, config, every figure).
        artifacts: Per file kind (``onnx``, ``ort``) its test-split metrics.
        hash_matches: Whether the rebuilt ONNX file is the model the trial measured.
        ort_matches_onnx: Whether the ``.ort`` gives exactly the ``.onnx``'s outputs.
    """

    number: int
    onnx_path: Path
    ort_path: Path | None
    operators_path: Path | None
    config_path: Path
    artifacts: dict[str, dict[str, float]] = field(default_factory=dict)
    hash_matches: bool = False
    ort_matches_onnx: bool | None = None
    fpga: dict | None = None
    """``[search.export] formats`` qonnx / hls4ml: what was written (see onnxopt.fpga)."""
    card_path: Path | None = None
    verified: dict[str, Any] | None = None
    """The ``.onnx`` against the fixed-point reference on this CPU (quantized models)."""
    latency_ms: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """Per file kind, per batch size: median, quartiles, p90 and runs of the written file."""

    @property
    def test_accuracy(self) -> float | None:
        """Test accuracy (classifiers; None for other tasks)."""
        return self.artifacts["onnx"].get("accuracy")

    @property
    def test_loss(self) -> float | None:
        """Test cross-entropy (classifiers; None for other tasks)."""
        return self.artifacts["onnx"].get("loss")

    @property
    def test_headline(self) -> str:
        """The task figure on the test split, for one-line summaries."""
        return registry.headline(self.artifacts["onnx"])

    @property
    def size_bytes(self) -> int:
        return int(self.artifacts["onnx"]["size"])

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return {
            "number": self.number,
            "onnx_path": str(self.onnx_path),
            "ort_path": None if self.ort_path is None else str(self.ort_path),
            "operators_path": None if self.operators_path is None else str(self.operators_path),
            "config_path": str(self.config_path),
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "size_bytes": self.size_bytes,
            "artifacts": self.artifacts,
            "hash_matches": self.hash_matches,
            "ort_matches_onnx": self.ort_matches_onnx,
            "card_path": None if self.card_path is None else str(self.card_path),
            "verified": self.verified,
            "latency_ms": self.latency_ms,
            **({"fpga": self.fpga} if self.fpga else {}),
        }


def export_trial(
    trial: FrozenTrial,
    space: SearchSpace,
    builder: CandidateBuilder,
    test: Measurer,
    folder: Path,
    *,
    latency: LatencyPlan | None = None,
    ort_format: bool = True,
    export: SearchExport | None = None,
    strict: bool = False,
    preprocessing: tuple[dict[str, Any], ...] = (),
    final_folder: Path | None = None,
) -> ExportedTrial:
    """Rebuild one trial's candidate, write its files and measure them on the test split.

    Args:
        trial: A finished trial.
        space: The search space (decodes the trial's params).
        builder: Builds the candidate from the pristine base.
        test: A measurer on the test split.
        folder: Where the files go.
        latency: How to time the files (None: no latency).
        ort_format: Also write the ``.ort`` and its operator config (when ``export.formats``
            holds ``ort``).
        export: The config's ``[search.export]``: QONNX / hls4ml files too.
        strict: Fail on a QONNX / hls4ml problem instead of recording it.
        preprocessing: The dataset's preprocessing steps (for the deployment card).
        final_folder: Where ``folder`` will be moved once every trial is written (the
            paths reported name that folder).
    """
    candidate = builder.build(space, space.decode(trial.params))
    stem = Path(folder) / f"trial_{trial.number:04d}"
    onnx_path = save_onnx(candidate.model, stem.with_suffix(".onnx"))
    measured = {"onnx": test.measure(onnx_path, latency=latency)}
    ort_path = operators = None
    if ort_format and (export is None or "ort" in export.formats):
        artifacts = save_ort_format(onnx_path, stem.with_suffix(".ort"))
        ort_path, operators = artifacts.model, artifacts.operators
        measured["ort"] = test.measure(ort_path, latency=latency)
    fpga = None
    if export is not None and {"qonnx", "hls4ml"} & set(export.formats):
        from onnxopt.fpga.trial_export import export_fpga

        fpga = export_fpga(
            candidate.model, stem, export.formats, export.hls4ml, test.split, strict=strict
        )
    figures = {kind: dict(m.metrics) for kind, m in measured.items()}
    same = _same_outputs(measured["onnx"], measured["ort"]) if "ort" in measured else None
    verified = _verify(onnx_path, test)
    card = deployment_card(
        onnx_path=onnx_path, ort_path=ort_path, operators_path=operators,
        kernels=kernel_facts(onnx_path, candidate.quantized), verified=verified,
        preprocessing=preprocessing, test_metrics=figures,
        versions={k: v for k, v in package_versions().items() if v},
    )  # fmt: skip
    card_path, _ = write_card(card, stem)
    final = Path(final_folder) if final_folder is not None else Path(folder)

    def moved(path: Path | None) -> Path | None:
        return None if path is None else final / path.name

    exported = ExportedTrial(
        number=trial.number,
        onnx_path=final / onnx_path.name,
        ort_path=moved(ort_path),
        operators_path=moved(operators),
        config_path=final / stem.with_suffix(".json").name,
        artifacts=figures,
        hash_matches=model_hash(onnx_path.read_bytes()) == trial.user_attrs.get("model_sha256"),
        ort_matches_onnx=same,
        fpga=_relocated(fpga, Path(folder), final),
        card_path=moved(card_path),
        verified=None if verified is None else verified.as_dict(),
        latency_ms={k: m.latency.to_dict() for k, m in measured.items() if m.latency},
    )
    info = {
        "trial": trial.number,
        "params": dict(trial.params),
        **candidate.config_dict(),
        "validation_metrics": trial.user_attrs.get("metrics", {}),
        "test_metrics": figures,
        "ort_matches_onnx": same,
        "verified": None if verified is None else verified.as_dict(),
        "model_sha256": trial.user_attrs.get("model_sha256"),
        # kept for readers of earlier reports
        "test_accuracy": figures["onnx"].get("accuracy"),
        "test_loss": figures["onnx"].get("loss"),
        **({"fpga": exported.fpga} if fpga else {}),
        "export": exported.as_dict(),
    }
    write_text(stem.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
    return exported


def _relocated(value: Any, old: Path, new: Path) -> Any:
    """``value`` with every path string under ``old`` moved under ``new``."""
    if isinstance(value, dict):
        return {k: _relocated(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, old, new) for v in value]
    if isinstance(value, str) and value.startswith(str(old)):
        return str(new) + value[len(str(old)) :]
    return value


def read_exported(folder: Path, trial: FrozenTrial) -> ExportedTrial | None:
    """The export of ``trial`` already on disk in ``folder`` (its ``trial_<n>.json``), when
    it is the same model (same sha256) and its files are still there; else None."""
    path = Path(folder) / f"trial_{trial.number:04d}.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        data = info["export"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.get("model_sha256") != trial.user_attrs.get("model_sha256"):
        return None
    onnx_path = Path(data["onnx_path"])
    if not onnx_path.is_file():
        return None

    def path_of(key: str) -> Path | None:
        return None if data.get(key) is None else Path(data[key])

    return ExportedTrial(
        number=trial.number, onnx_path=onnx_path, ort_path=path_of("ort_path"),
        operators_path=path_of("operators_path"), config_path=path,
        artifacts=data["artifacts"], hash_matches=data["hash_matches"],
        ort_matches_onnx=data["ort_matches_onnx"], fpga=data.get("fpga"),
        card_path=path_of("card_path"), verified=data.get("verified"),
        latency_ms=data.get("latency_ms") or {},
    )  # fmt: skip


def _verify(onnx_path: Path, test: Measurer) -> VerifyReport | None:
    """The file against the fixed-point reference on the test split (float models: None)."""
    try:
        return verify_model(
            onnx_path, test.split.x, threads=test.threads, fixed_inputs=test.fixed_inputs
        )
    except UsageError:  # no quantized tensor: nothing fixed-point to verify
        return None


def _same_outputs(a: Measurement, b: Measurement) -> bool:
    """Whether two measurements saw bit-identical scored outputs."""
    return bool(np.array_equal(a.outputs, b.outputs))
