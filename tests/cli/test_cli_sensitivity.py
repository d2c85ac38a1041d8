"""`onnxopt sensitivity` through CliRunner: a ranked table and JSON written atomically; a model
with nothing to quantize is one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.parser
import pytest
from click.testing import CliRunner

from onnxopt.cli import main


def test_layers_ranked_by_their_drop_with_json(exported_recipe, tmp_path):
    model = exported_recipe("digits-mlp")
    out = tmp_path / "sens.json"
    result = CliRunner().invoke(main, ["sensitivity", str(model), "--data", "digits",
                                       "--width", "2", "--width", "8", "--output", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    gemms = [n.name for n in onnx.load(model).graph.node if n.op_type in ("Gemm", "MatMul")]
    layers = data["layers"]
    assert sorted(x["node"] for x in layers) == sorted(gemms) and data["widths"] == [2, 8]
    worst = [x["worst_drop"] for x in layers]
    assert worst == sorted(worst, reverse=True)  # most sensitive first
    n = data["samples"]
    for x in layers:
        for width, drop in x["drop"].items():
            # an accuracy drop is whole samples of the split
            assert abs(drop * n - round(drop * n)) < 1e-6, (x["node"], width, drop)
        assert x["drop"]["8"] <= 0.02  # 8-bit weights of one layer barely matter
        assert x["metric"]["2"] == pytest.approx(data["baseline"] - x["drop"]["2"])
    assert layers[0]["drop"]["2"] > 0.1  # 2-bit weights break the most sensitive layer
    lines = result.output.splitlines()  # progress lines (stderr) come first
    assert [x for x in lines if x.startswith("layer ")][-1].startswith(f"layer {len(gemms)}/")
    table = lines[next(i for i, x in enumerate(lines) if x.startswith("rank")):]
    assert table[0].split()[:4] == ["rank", "node", "op", "params"]
    assert table[1].split()[1] == layers[0]["node"] and f"-> {out}" in result.output
    assert not list(tmp_path.glob("*.tmp*"))


def test_a_model_without_layers_to_quantize_is_one_line(tmp_path):
    model = onnx.parser.parse_model(
        '<ir_version: 10, opset_import: ["" : 21]>\n'
        "g (float[N, 64] x) => (float[N, 10] y) {\n"
        "  r = Relu(x)\n  y = Slice(r, s, e, a)\n}"
    )
    for name, value in (("s", [0]), ("e", [10]), ("a", [1])):
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(value), name))
    path = tmp_path / "relu.onnx"
    onnx.save(model, path)
    result = CliRunner().invoke(main, ["sensitivity", str(path), "--data", "digits"])
    assert result.exit_code == 2, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert errors == ["error: the model has no Gemm, MatMul or Conv layer to quantize"]
