"""The quantization defaults, written out: what `onnxopt quantize` does without a config."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config.quantization import LayerQuant, QuantizationConfig
from onnxopt.optimizer.quantization.metadata import BIT_WIDTHS_KEY, metadata_value
from onnxopt.optimizer.quantization.quantizer import Quantizer


def test_layer_defaults():
    layer = LayerQuant()
    assert layer.enabled is True
    assert (layer.data_in_width, layer.data_in_frac_width) == (8, "auto")
    assert (layer.weight_width, layer.weight_frac_width) == (8, "auto")
    assert (layer.bias_width, layer.bias_frac_width) == (16, "auto")
    assert layer.data_out_width is None and layer.data_out_frac_width == "auto"


def test_model_defaults():
    config = QuantizationConfig()
    assert config.target_cpu == "auto"
    assert config.storage == "container" and config.granularity == "per_tensor"
    assert config.calibration.method == "minmax"
    assert config.calibration.percentile == 99.999 and config.calibration.num_samples == 256
    assert config.by_type == {} and config.by_name == {}


def test_the_defaults_reach_the_quantized_model():
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], "fc", transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(rng.normal(0, 1, (3, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(0, 1, 3).astype(np.float32), "b")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    x = rng.normal(0, 1, (64, 8)).astype(np.float32)
    quantized = Quantizer(model, x).quantize(QuantizationConfig()).model
    widths = json.loads(metadata_value(quantized, BIT_WIDTHS_KEY))
    assert widths == {"fc_weight_quantized": 8, "fc_bias_quantized": 16}
    q = next(n for n in quantized.graph.node if n.op_type == "QuantizeLinear")
    zp = next(t for t in quantized.graph.initializer if t.name == q.input[2])
    assert zp.data_type == TensorProto.UINT8  # 8-bit activations in uint8 (zero point 128)
    assert onnx.numpy_helper.to_array(zp) == 128
