"""Packed INT4/INT2 weight storage: smaller files, same outputs, still fused."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper
from qdq_helpers import assert_valid, cnn_model, count_ops, mlp_model, optimized_op_types, run

from onnxopt.optimizer.quantization import NodeQuantSpec, TensorSpec, quantize_model

LEVELS = [
    ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
]


def _specs(names, weight_width, per_channel=False):
    weight = TensorSpec(weight_width, granularity="per_channel" if per_channel else "per_tensor")
    return {n: NodeQuantSpec(weight, TensorSpec(16, 8), TensorSpec(8, 4)) for n in names}


def _both_storages(model, specs):
    container = quantize_model(model, specs, storage="container")
    packed = quantize_model(model, specs, storage="packed")
    for result in (container, packed):
        assert_valid(result.model)
    return container, packed


@pytest.mark.parametrize(
    ("width", "data_type", "opset"),
    [(4, TensorProto.INT4, 21), (3, TensorProto.INT4, 21), (2, TensorProto.INT2, 25)],
)
def test_packed_weights_are_smaller_on_disk_and_give_the_same_outputs(
    width, data_type, opset, tmp_path
):
    model, layers = mlp_model()
    container, packed = _both_storages(model, _specs([layer["name"] for layer in layers], width))
    sizes = {}
    for name, result in {"container": container, "packed": packed}.items():
        onnx.save(result.model, tmp_path / f"{name}.onnx")
        sizes[name] = (tmp_path / f"{name}.onnx").stat().st_size
    params = sum(layer["w"].size for layer in layers)
    per_byte = 8 // (4 if data_type == TensorProto.INT4 else 2)
    ideal_saving = params - params / per_byte
    # the Cast nodes and their value_info cost a few hundred bytes on this tiny model
    assert sizes["container"] - sizes["packed"] > 0.6 * ideal_saving
    weights = [t for t in packed.model.graph.initializer if t.name.endswith("_weight_quantized")]
    assert {t.data_type for t in weights} == {data_type}
    assert len(weights[0].raw_data) == -(-np.prod(weights[0].dims) // per_byte)
    assert packed.opset == opset and container.opset == 21
    # the packed initializer is cast to 8 bits in the graph: one Cast per weight
    assert count_ops(packed.model)["Cast"] == 3
    x = (np.random.default_rng(5).standard_normal((9, 64)) * 4).astype(np.float32)
    reference = run(container.model, x)
    for level in LEVELS:
        np.testing.assert_array_equal(run(packed.model, x, level), reference)


def test_packed_weights_hold_the_narrow_values_and_still_fuse(tmp_path):
    model, layers = mlp_model()
    _, packed = _both_storages(model, _specs([layer["name"] for layer in layers], 3))
    ints = numpy_helper.to_array(
        next(t for t in packed.model.graph.initializer if t.name == "fc0_weight_quantized")
    )
    assert ints.min() >= -4 and ints.max() <= 3
    assert packed.bit_widths["fc0_weight_quantized"] == 3
    by_key = {(label.node, label.tensor): label for label in packed.labels}
    assert by_key["fc0", "weight"].container == "int4"
    assert "no storage or speed gain over 4-bit" in by_key["fc0", "weight"].reason
    assert optimized_op_types(packed.model, tmp_path).count("QGemm") == 3


def test_packed_per_channel_conv_weights(tmp_path):
    model, _ = cnn_model()
    specs = _specs(["conv1", "conv2"], 4, per_channel=True)
    specs = {
        name: NodeQuantSpec(s.weight, s.bias, s.data_in, data_out=TensorSpec(8, 4))
        for name, s in specs.items()
    }
    container, packed = _both_storages(model, specs)
    x = np.random.default_rng(6).uniform(-1.0, 3.0, (3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(run(packed.model, x), run(container.model, x))
    assert optimized_op_types(packed.model, tmp_path).count("QLinearConv") == 2
