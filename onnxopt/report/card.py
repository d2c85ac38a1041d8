"""Deployment cards: everything an engineer needs to ship one exported model.

``trial_NNNN.card.json`` (for machines) and ``trial_NNNN.card.md`` (for people) sit beside
the model files and say: the input and output tensors, the preprocessing the data needs,
the fixed-point format of every quantized tensor, the kernels onnxruntime runs, the
operators a reduced onnxruntime build must include, the CPU integer path the model was
verified on (and how exact it was there), the versions it was made with, a sha256 per file,
and how to run it with plain onnxruntime.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import onnx

from onnxopt.atomic import write_text
from onnxopt.model_io import file_sha256
from onnxopt.optimizer.evaluate.verify import VerifyReport
from onnxopt.optimizer.quantization.formats import read_formats
from onnxopt.runtime.kernels import KernelFacts


def _tensor(value: onnx.ValueInfoProto) -> dict[str, Any]:
    t = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]
    return {"name": value.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(
        t.elem_type).name}  # fmt: skip


def _formats(model: onnx.ModelProto) -> list[dict[str, Any]]:
    rows = []
    for name, q in read_formats(model).items():
        fmt = q.fmt
        rows.append({
            "tensor": name, "role": str(q.role), "source": q.source, "width": fmt.width,
            "frac": list(fmt.frac) if isinstance(fmt.frac, tuple) else fmt.frac,
            "signed": fmt.signed, "label": fmt.label(),
        })  # fmt: skip
    return rows


def _operators(path: Path | None) -> list[str]:
    if path is None or not path.is_file():
        return []
    return [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]


def deployment_card(
    *,
    onnx_path: Path,
    ort_path: Path | None,
    operators_path: Path | None,
    kernels: KernelFacts,
    verified: VerifyReport | None,
    preprocessing: tuple[dict[str, Any], ...],
    test_metrics: dict[str, dict[str, float]],
    versions: dict[str, str],
) -> dict[str, Any]:
    """The card of one exported model, as plain JSON."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    files = {"onnx": onnx_path, "ort": ort_path, "operators": operators_path}
    return {
        "model": onnx_path.stem,
        "inputs": [_tensor(v) for v in model.graph.input if v.type.HasField("tensor_type")],
        "outputs": [_tensor(v) for v in model.graph.output if v.type.HasField("tensor_type")],
        "preprocessing": list(preprocessing),
        "quantized_tensors": _formats(model),
        "kernels": kernels.as_dict(),
        "required_operators": _operators(operators_path),
        "verified": None if verified is None else verified.as_dict(),
        "test_metrics": test_metrics,
        "versions": {"python": platform.python_version(), **versions},
        "files": {
            kind: {"path": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path)}
            for kind, path in files.items()
            if path is not None and path.is_file()
        },
        "run": run_snippet(onnx_path.name, model),
    }


def run_snippet(file_name: str, model: onnx.ModelProto) -> str:
    """Five lines of plain onnxruntime that run the model on one batch."""
    first = model.graph.input[0].name
    return "\n".join([
        "import numpy as np, onnxruntime as ort",
        f'session = ort.InferenceSession("{file_name}", providers=["CPUExecutionProvider"])',
        "x = np.zeros((1, *session.get_inputs()[0].shape[1:]), np.float32)  # preprocessed",
        f'(scores,) = session.run(None, {{"{first}": x}})',
        "print(scores.argmax(axis=1))",
    ])  # fmt: skip


def card_markdown(card: dict[str, Any]) -> str:
    """The card for people."""
    lines = [f"# {card['model']}", "", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {f['path']} | {f['bytes']:,} | `{f['sha256']}` |" for f in card["files"].values()]
    lines += ["", "## Inputs and outputs", ""]
    for kind in ("inputs", "outputs"):
        lines += [f"- {kind[:-1]} `{t['name']}`: {t['dtype']} {t['shape']}" for t in card[kind]]
    lines += ["", "## Preprocessing", ""]
    lines += [f"- {json.dumps(step)}" for step in card["preprocessing"]] or ["- none"]
    lines += ["", "## Fixed-point formats", "", "| tensor | role | format |", "|---|---|---|"]
    lines += [f"| {q['tensor']} | {q['role']} | {q['label']} |" for q in card["quantized_tensors"]]
    counts = ", ".join(f"{k} x{v}" for k, v in card["kernels"]["counts"].items())
    lines += ["", "## Runtime", "", f"onnxruntime runs: {counts}", ""]
    if card["required_operators"]:
        lines += ["Reduced build (`--include_ops_by_config`):", "", "```"]
        lines += [*card["required_operators"], "```", ""]
    verified = card["verified"]
    if verified:
        path = verified["integer_path"]
        lines.append(
            f"Verified on {path['class']} ({path['cpu']}): {verified['exact']:,} of "
            f"{verified['elements']:,} outputs exact (max |diff| {verified['max_abs_diff']:.3g}); "
            f"weights stored for {verified['target_cpu']}."
        )
    versions = ", ".join(f"{k} {v}" for k, v in card["versions"].items() if v)
    lines += ["", f"Made with {versions}.", "", "## Run it", "", "```python", card["run"], "```"]
    return "\n".join(lines) + "\n"


def write_card(card: dict[str, Any], stem: Path) -> tuple[Path, Path]:
    """Write ``<stem>.card.json`` and ``<stem>.card.md`` atomically."""
    json_path = write_text(stem.with_name(stem.name + ".card.json"), json.dumps(card, indent=2))
    md_path = write_text(stem.with_name(stem.name + ".card.md"), card_markdown(card))
    return json_path, md_path
