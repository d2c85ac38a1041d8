"""What a search ships: .onnx and .ort measured from disk, a deployment card, verified exact."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime as ort

from onnxopt.config.search import load_search_config
from onnxopt.optimizer.search.run import export_best, run_search
from onnxopt.report.search_report import summary
from onnxopt.runtime.cpu import integer_path

SEARCH = """
[search.quantization.by_type.linear]
weight_width = [4, 8]
[search.strategy]
sampler = "brute-force"
n_trials = 2
[search.metrics.accuracy]
[search.metrics.size]
"""


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_exported_file_is_measured_verified_and_carded(write_config, tmp_path):
    config = load_search_config(write_config(SEARCH))
    result = run_search(config, run_dir=tmp_path / "run", progress=False)
    exported = export_best(result)
    assert exported
    x = result.context.dataset.test.x.astype(np.float32)
    for e in exported:
        assert e.hash_matches and e.ort_matches_onnx
        onnx_scores = ort.InferenceSession(str(e.onnx_path)).run(None, {"x": x})[0]
        ort_scores = ort.InferenceSession(str(e.ort_path)).run(None, {"x": x})[0]
        np.testing.assert_array_equal(onnx_scores, ort_scores)
        assert e.artifacts["ort"]["accuracy"] == e.artifacts["onnx"]["accuracy"]
        assert e.artifacts["ort"]["size"] == e.ort_path.stat().st_size
        assert e.artifacts["onnx"]["latency_b256"] > 0 and e.artifacts["ort"]["latency_b256"] > 0
        assert e.verified["exact"] == e.verified["elements"] == onnx_scores.size
        card = json.loads(e.card_path.read_text())
        assert card["files"]["onnx"]["sha256"] == _sha(e.onnx_path)
        assert card["files"]["ort"]["sha256"] == _sha(e.ort_path)
        assert card["verified"]["integer_path"]["class"] == integer_path().name
        assert card["inputs"] == [{"name": "x", "shape": ["batch", 64], "dtype": "float32"}]
        assert card["preprocessing"][1] == {
            "op": "divide", "by": 16.0, "note": "pixel intensities 0..16 -> 0..1"
        }
        assert {q["role"] for q in card["quantized_tensors"]} == {"activation", "constant"}
        assert card["kernels"]["nodes"] and all(card["kernels"]["nodes"].values())
        assert any("QGemm" in line for line in card["required_operators"])
        markdown = e.card_path.with_name(e.card_path.name.replace(".json", ".md")).read_text()
        assert "## Run it" in markdown and e.onnx_path.name in markdown
        namespace: dict = {}
        snippet = card["run"].replace(e.onnx_path.name, str(e.onnx_path))
        exec(compile(snippet, "card", "exec"), namespace)  # the card's own five lines run
    text = summary(result)
    assert "same outputs" in text and f"100.00% exact on {integer_path().name}" in text
