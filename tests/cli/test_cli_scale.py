"""onnxopt scale through the CLI: a real shrink with refit, then quantization of the result."""

import json

import onnx
from click.testing import CliRunner

from onnxopt.cli import main


def test_scale_then_quantize(exported_recipe, tmp_path):
    model = exported_recipe("digits-mlp")
    first = next(n.name for n in onnx.load(str(model)).graph.node if n.op_type == "Gemm")
    config = tmp_path / "w.toml"
    config.write_text(f'[layers.{first}]\nchannel_multiplier = 0.5\nmode = "output_only"\n')
    scaled = tmp_path / "s.onnx"
    result = CliRunner().invoke(main, ["scale", str(model), "--config", str(config),
                                       "-o", str(scaled), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(c["old_width"], c["new_width"]) for c in report["changes"]] == [(64, 32)]
    assert report["refits"] and "x" in report["frozen"]
    weight = {t.name: list(t.dims) for t in onnx.load(str(scaled)).graph.initializer}
    assert sorted(dims for dims in weight.values() if len(dims) == 2)[0:3] == [
        [10, 32], [32, 32], [32, 64]]  # fmt: skip

    result = CliRunner().invoke(main, ["quantize", str(scaled), "-o", str(tmp_path / "q.onnx")])
    assert result.exit_code == 0, result.output
    assert "QGemm x3" in result.output


def test_scale_unknown_node_is_exit_2(exported_recipe, tmp_path):
    config = tmp_path / "w.toml"
    config.write_text("[layers.node_Gem_14]\nchannel_multiplier = 0.5\n")
    result = CliRunner().invoke(main, ["scale", str(exported_recipe("digits-mlp")), "--config",
                                       str(config), "-o", str(tmp_path / "s.onnx")])  # fmt: skip
    assert result.exit_code == 2
    assert "no such node" in result.output and "did you mean" in result.output
