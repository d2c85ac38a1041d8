"""onnxopt scale through the CLI: a real shrink with refit, then quantization of the result."""

import json

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import helper, numpy_helper

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


def _two_gemms(path) -> str:
    """x (N, 4) -> Gemm fc0 (8 channels) -> Relu -> Gemm fc1 (3), written to ``path``."""
    rng = np.random.default_rng(0)
    w0, w1 = (rng.standard_normal(s).astype(np.float32) for s in ((4, 8), (8, 3)))
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w0"], ["h"], "fc0"),
            helper.make_node("Relu", ["h"], ["r"], "relu0"),
            helper.make_node("Gemm", ["r", "w1"], ["y"], "fc1"),
        ],
        "two_gemms",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w0, "w0"), numpy_helper.from_array(w1, "w1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, str(path))
    return str(path)


def _scale_error(tmp_path, toml: str) -> str:
    config = tmp_path / "w.toml"
    config.write_text('importance = "weight_norm"\nrefit = "none"\n[layers.fc0]\n' + toml)
    model = _two_gemms(tmp_path / "m.onnx")
    args = ["scale", model, "--config", str(config), "-o", str(tmp_path / "s.onnx")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1, result.output  # one line, no traceback
    assert not (tmp_path / "s.onnx").exists()
    return result.output.strip()


def test_scale_with_a_list_of_choices_says_how_to_fix_the_toml(tmp_path):
    line = _scale_error(tmp_path, "channel_multiplier = [0.5, 1.0]\n")
    assert line.startswith("error: ") and line.endswith(
        "layers.fc0: channel_multiplier = [0.5, 1.0] is a list of choices for the search; "
        "onnxopt scale needs one number, e.g. channel_multiplier = 0.5"
    )
    assert "choices={" not in line


def test_scale_with_a_multiplier_rounding_to_zero_is_one_line(tmp_path):
    line = _scale_error(tmp_path, "channel_multiplier = 0.03125\n")
    assert line.startswith("error: ") and line.endswith(
        "layers.fc0.channel_multiplier: 0.03125 x 8 channels of group 'h' rounds to 0 "
        "channels; use at least 0.0625"
    )
