"""QDQ -> QONNX: Quant nodes with the true widths, onnx.checker, qonnx's executor == onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from onnxopt.cli import main
from onnxopt.exporters.user_model import prepare_user_model
from onnxopt.fpga.qonnx_check import check_qonnx, run_qonnx
from onnxopt.fpga.qonnx_convert import QONNX_DOMAIN, to_qonnx
from onnxopt.optimizer.quantization.formats import read_formats
from tests.fpga.helpers import gemm_names, inputs, mixed_config, need_extra, plain_mlp, quantize

pytestmark = pytest.mark.usefixtures("fpga_extra")


@pytest.fixture(scope="module")
def fpga_extra():
    need_extra()


@pytest.fixture(scope="module")
def digits_models(exported_recipe, digits):
    model = onnx.load(exported_recipe("digits-mlp"))
    x = digits.calibration.x
    return {
        "8-bit": quantize(model, x),
        "mixed": quantize(model, x, mixed_config(gemm_names(model))),
    }


def quant_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Quant" and n.domain == QONNX_DOMAIN]


def init(model, name) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)


@pytest.mark.parametrize("config", ["8-bit", "mixed"])
def test_quant_nodes_carry_the_true_formats(digits_models, digits, config):
    qdq = digits_models[config]
    formats = read_formats(qdq)
    qonnx = to_qonnx(qdq).model
    onnx.checker.check_model(qonnx, full_check=True)
    assert not [
        n for n in qonnx.graph.node if "QuantizeLinear" in n.op_type or "Dequant" in n.op_type
    ]
    nodes = quant_nodes(qonnx)
    assert len(nodes) == len(formats) == 9  # 3 layers x (input, weight, bias)
    for node in nodes:
        fmt = formats[node.output[0]].fmt
        scale, zp, bits = (init(qonnx, name) for name in node.input[1:])
        assert float(scale) == 2.0**-fmt.frac and float(zp) == 0.0 and int(bits) == fmt.width
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"signed": int(fmt.signed), "narrow": 0, "rounding_mode": b"ROUND"}
    if config == "mixed":  # 2..8-bit weights are not the int8 container's 8 bits
        widths = sorted(int(init(qonnx, n.input[3])) for n in nodes)
        assert widths[0] == 2 and 8 in widths
    check = check_qonnx(qonnx, qdq, digits.test.x)
    assert check.all_exact and check.total == 360 * 10, check.summary()


def _with_explicit_bias_zero_points(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto.FromString(model.SerializeToString())
    for node in out.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) == 2:
            name = f"{node.input[0]}_zp"
            out.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.int32), name))
            node.input.append(name)
    return out


def _with_uint8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """8-bit weights as uint8 with zero point 128 (signed values), as main may store them."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {t.name: t for t in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        codes = numpy_helper.to_array(inits[node.input[0]])
        if codes.dtype != np.int8:
            continue
        shifted = (codes.astype(np.int16) + 128).astype(np.uint8)
        inits[node.input[0]].CopyFrom(numpy_helper.from_array(shifted, node.input[0]))
        zp_name = f"{node.input[0]}_zp128"
        out.graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), zp_name))
        node.input[2] = zp_name
    return out


@pytest.mark.parametrize("variant", [_with_explicit_bias_zero_points, _with_uint8_weights])
def test_other_storage_of_the_same_formats_gives_the_same_qonnx(digits_models, digits, variant):
    qdq = digits_models["mixed"]
    other = variant(qdq)
    onnx.checker.check_model(other, full_check=True)
    assert [t.fmt for t in read_formats(other).values()] == [
        t.fmt for t in read_formats(qdq).values()
    ]
    a, b = to_qonnx(qdq).model, to_qonnx(other).model
    x = digits.test.x[:50]
    np.testing.assert_array_equal(run_qonnx(a, x), run_qonnx(b, x))
    assert check_qonnx(b, other, digits.test.x).all_exact


def test_unnamed_model_with_signed_activations(tmp_path):
    model = prepare_user_model(plain_mlp(relu_after=()), "plain.onnx").model
    x = inputs(400, 12)
    qdq = quantize(model, x)
    zero_points = [
        int(init(qdq, n.input[2])) for n in qdq.graph.node if n.op_type == "QuantizeLinear"
    ]
    assert zero_points == [128, 128, 128]  # signed activations in uint8
    qonnx = to_qonnx(qdq)
    assert all(n.attribute[0].i == 1 for n in quant_nodes(qonnx.model))  # all signed
    assert check_qonnx(qonnx.model, qdq, x).all_exact


def test_cli_writes_qonnx_only_after_the_check(digits_models, tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(digits_models["8-bit"], path)
    out = tmp_path / "m.qonnx.onnx"
    result = CliRunner().invoke(
        main, ["export", str(path), "--format", "qonnx", "-o", str(out), "--data", "digits"]
    )
    assert result.exit_code == 0, result.output
    assert "9 Quant node(s), onnx.checker passed" in result.output
    assert "3600/3600 outputs exact (100.00%)" in result.output
    onnx.checker.check_model(onnx.load(out))


def test_cli_refuses_a_float_model(exported_recipe, tmp_path):
    out = tmp_path / "f.qonnx.onnx"
    args = ["export", str(exported_recipe("digits-mlp")), "--format", "qonnx", "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert "it is a float model; quantize it first" in result.output and not out.exists()


def test_per_channel_weights_and_biases(tmp_path):
    model = prepare_user_model(plain_mlp(relu_after=(0,)), "plain.onnx").model
    x = inputs(300, 12)
    config = {"granularity": "per_channel", "default": {"weight_width": 5, "bias_width": 6}}
    qdq = quantize(model, x, config)
    formats = read_formats(qdq)
    weights = [t for t in formats.values() if t.name.endswith("weight_dq")]
    assert all(t.fmt.per_channel and t.fmt.width == 5 for t in weights)
    qonnx = to_qonnx(qdq).model
    onnx.checker.check_model(qonnx, full_check=True)
    scales = [init(qonnx, n.input[1]) for n in quant_nodes(qonnx) if "weight" in n.name]
    assert all(s.shape == (s.shape[0], 1) for s in scales)  # [out, 1]: one per output row
    assert check_qonnx(qonnx, qdq, x).all_exact
