"""Quantization on the trained digits models: accuracy, fusion, size on disk, config errors."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from onnxopt.config import validate
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.errors import ConfigError
from onnxopt.model_io import save_onnx
from onnxopt.optimizer.evaluate import evaluate_model
from onnxopt.optimizer.quantization.quantizer import Quantizer
from onnxopt.runtime.kernels import INTEGER_KERNELS, kernel_facts

pytestmark = pytest.mark.slow


def _quantize(path, digits, tmp_path, name, **config):
    base = onnx.load(str(path))
    candidate = Quantizer(base, digits.calibration.x).quantize(validate(QuantizationConfig, config))
    return candidate, save_onnx(candidate.model, tmp_path / f"{name}.onnx")


@pytest.mark.parametrize(
    ("recipe", "kernel"), [("digits-mlp", "QGemm"), ("digits-cnn", "QLinearConv")]
)
def test_8bit_within_one_point_and_fused(exported_recipe, digits, tmp_path, recipe, kernel):
    fp32 = exported_recipe(recipe)
    candidate, path = _quantize(fp32, digits, tmp_path, recipe)
    onnx.checker.check_model(candidate.model, full_check=True)
    onnx.shape_inference.infer_shapes(candidate.model, strict_mode=True)
    base = evaluate_model(fp32, digits.test, measure_latency=False).accuracy
    quant = evaluate_model(path, digits.test, measure_latency=False).accuracy
    assert abs(base - quant) <= 0.01, f"{recipe}: fp32 {base:.4f} vs 8-bit {quant:.4f}"
    kernels = kernel_facts(candidate.model).counts
    assert kernels.get(kernel, 0) >= 1
    float_compute = {"Gemm", "Conv", "MatMul", "FusedConv", "FusedGemm"} & set(kernels)
    assert not float_compute, f"layers left in float after fusion: {kernels}"
    assert len(candidate.result.quantized) == sum(kernels.get(k, 0) for k in INTEGER_KERNELS)


def test_digits_wide_file_sizes(exported_recipe, digits, tmp_path):
    fp32 = exported_recipe("digits-wide")
    fp32_bytes = fp32.stat().st_size
    _, int8 = _quantize(fp32, digits, tmp_path, "w8")
    _, packed = _quantize(
        fp32, digits, tmp_path, "w4", storage="packed", default={"weight_width": 4}
    )
    assert int8.stat().st_size <= 0.26 * fp32_bytes
    assert packed.stat().st_size <= 0.14 * fp32_bytes
    # the packed file really runs and keeps usable accuracy at 4-bit weights
    assert evaluate_model(packed, digits.test, measure_latency=False).accuracy > 0.9


def test_digits_mlp_smaller_than_onnxruntime_quantize_static(exported_recipe, digits, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fp32 = exported_recipe("digits-mlp")
    _, ours = _quantize(fp32, digits, tmp_path, "ours")

    class Reader:
        def __init__(self):
            self.batches = iter(np.array_split(digits.calibration.x, 4))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"x": batch}

    theirs = tmp_path / "ort_static.onnx"
    quantize_static(
        str(fp32),
        str(theirs),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    assert ours.stat().st_size < theirs.stat().st_size


def test_by_name_wins_over_by_type_and_default(exported_recipe, digits, tmp_path):
    path = exported_recipe("digits-mlp")
    gemms = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Gemm"]
    candidate, _ = _quantize(
        path,
        digits,
        tmp_path,
        "mixed",
        default={"weight_width": 8},
        by_type={"gemm": {"weight_width": 4}},
        by_name={gemms[0]: {"weight_width": 6}, gemms[2]: {"enabled": False}},
    )
    widths = candidate.result.bit_widths
    assert widths[f"{gemms[0]}_weight_quantized"] == 6
    assert widths[f"{gemms[1]}_weight_quantized"] == 4
    assert gemms[2] not in candidate.result.quantized
    assert "disabled" in candidate.float_nodes[gemms[2]]
    assert any(lbl.width == 6 for lbl in candidate.result.labels)  # 6 bits buy nothing in int8


def test_unknown_node_name_lists_the_closest(exported_recipe, digits):
    path = exported_recipe("digits-mlp")
    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "Gemm"]
    typo = names[0][:-1] + "9"
    with pytest.raises(ConfigError, match=f"no node '{typo}'.*did you mean") as info:
        Quantizer(onnx.load(str(path)), digits.calibration.x).quantize(
            validate(QuantizationConfig, {"by_name": {typo: {"weight_width": 4}}})
        )
    assert names[0] in str(info.value)


def test_quantize_cli(exported_recipe, tmp_path):
    config = tmp_path / "q.toml"
    config.write_text(
        'storage = "container"\n[default]\nweight_width = 4\ndata_in_frac_width = "NA"\n'
    )
    out = tmp_path / "q.onnx"
    result = CliRunner().invoke(
        main,
        [
            "quantize",
            str(exported_recipe("digits-mlp")),
            "--config",
            str(config),
            "-o",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["size_bytes"]["container"] == out.stat().st_size
    assert report["size_bytes"]["packed"] < report["size_bytes"]["container"]
    assert report["fused_kernels"]["QGemm"] == 3

    config.write_text("[default]\nweight_widht = 4\n")
    result = CliRunner().invoke(
        main,
        ["quantize", str(exported_recipe("digits-mlp")), "--config", str(config), "-o", str(out)],
    )
    assert result.exit_code == 2
    assert "unknown key 'default.weight_widht'; did you mean 'weight_width'" in result.output


def test_an_output_q_added_for_fusion_is_8_bit(exported_recipe, digits, tmp_path):
    # The last conv feeds a float ReduceMean, so the pass adds an output Q for QLinearConv;
    # it must not inherit a narrow data_in width the user set for the layer inputs.
    fp32 = exported_recipe("digits-cnn")
    candidate, _ = _quantize(fp32, digits, tmp_path, "cnn4", default={"data_in_width": 4})
    outputs = {
        name: spec.data_out for name, spec in candidate.annotation.specs.items() if spec.data_out
    }
    assert outputs, "no conv got an output Q for fusion"
    assert {spec.width for spec in outputs.values()} == {8}


def test_no_calibration_needed_without_auto_fractions(exported_recipe):
    base = onnx.load(str(exported_recipe("digits-mlp")))
    config = validate(QuantizationConfig, {"default": {"data_in_frac_width": 4}})
    candidate = Quantizer(base).quantize(config)  # no calibration data given
    assert candidate.result.quantized
