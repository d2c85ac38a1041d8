"""The QDQ format reader on hand-built graphs (every storage variant) and on onnxopt's models.

Each read format is checked against onnxruntime: the DQ output onnxruntime computes must
equal ``code * 2**-frac`` with the codes inside the read width's range.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.errors import UsageError
from onnxopt.exporters.user_model import prepare_user_model
from onnxopt.optimizer.quantization.formats import Role, read_formats
from tests.fpga.helpers import gemm_names, inputs, mixed_config, plain_mlp, quantize

OPSET = 21


def _model(nodes, inits, outputs, metadata=None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def _init(name, value, dtype):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def activation(zp_dtype, zp, frac=3, code_clip=None, float_clip=None, explicit_zp=True):
    """x -> (float Clip) -> Q -> (code Clip) -> DQ -> y."""
    inits = [_init("s", 2.0**-frac, np.float32), _init("zp", zp, zp_dtype)]
    nodes, src = [], "x"
    if float_clip is not None:
        inits += [_init("flo", float_clip[0], np.float32), _init("fhi", float_clip[1], np.float32)]
        nodes.append(helper.make_node("Clip", ["x", "flo", "fhi"], ["xc"], name="fclip"))
        src = "xc"
    nodes.append(helper.make_node("QuantizeLinear", [src, "s", "zp"], ["q"], name="Q"))
    codes = "q"
    if code_clip is not None:
        inits += [_init("lo", code_clip[0], zp_dtype), _init("hi", code_clip[1], zp_dtype)]
        nodes.append(helper.make_node("Clip", ["q", "lo", "hi"], ["qc"], name="cclip"))
        codes = "qc"
    dq_in = [codes, "s", "zp"] if explicit_zp else [codes, "s"]
    nodes.append(helper.make_node("DequantizeLinear", dq_in, ["y"], name="DQ"))
    return _model(nodes, inits, ["y"])


def run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def assert_on_grid(values, fmt):
    codes = np.ldexp(np.asarray(values, np.float64), fmt.frac)
    assert np.array_equal(codes, np.rint(codes))
    lo, hi = fmt.code_range
    assert codes.min() >= lo and codes.max() <= hi
    return codes


X = np.linspace(-10000, 10000, 4 * 3001, dtype=np.float32).reshape(-1, 4)


@pytest.mark.parametrize(
    ("zp_dtype", "zp", "code_clip", "float_clip", "expected"),
    [
        (np.uint8, 0, None, None, (8, False)),  # after a ReLU
        (np.uint8, 128, None, None, (8, True)),  # signed values in uint8
        (np.int8, 0, None, None, (8, True)),
        (np.uint8, 128, (128 - 16, 128 + 15), None, (5, True)),  # narrow: a Clip on codes
        (np.uint8, 0, (0, 7), None, (3, False)),
        (np.int16, 0, None, (-512 / 8, 511 / 8), (10, True)),  # narrow: a float Clip before Q
        (np.uint16, 0, None, None, (16, False)),
    ],
)
def test_activation_formats_match_onnxruntime(zp_dtype, zp, code_clip, float_clip, expected):
    model = activation(zp_dtype, zp, code_clip=code_clip, float_clip=float_clip)
    (tensor,) = read_formats(model).values()
    assert tensor.role is Role.ACTIVATION and tensor.name == "y" and tensor.source == "x"
    assert (tensor.fmt.width, tensor.fmt.signed, tensor.fmt.frac) == (*expected, 3)
    codes = assert_on_grid(run(model, X)[0], tensor.fmt)
    # the inputs cover both ends, so onnxruntime reaches both ends of the read range
    assert (codes.min(), codes.max()) == tensor.fmt.code_range
    assert tensor.nodes[-1] == "DQ" and ("cclip" in tensor.nodes) == (code_clip is not None)


def test_dq_without_zero_point_is_unsigned_uint8():
    model = activation(np.uint8, 0, explicit_zp=False)
    (tensor,) = read_formats(model).values()
    assert (tensor.fmt.width, tensor.fmt.signed) == (8, False)


def test_a_float_clip_that_is_no_width_range_belongs_to_the_model():
    model = activation(np.uint8, 0, float_clip=(0.0, 6.0))  # Relu6: 48 codes, no width
    (tensor,) = read_formats(model).values()
    assert tensor.source == "xc" and "fclip" not in tensor.nodes and tensor.fmt.width == 8


def constant(codes, dtype, frac, zp=None, bit_widths=None, cast_from=None):
    """A constant DQ (optionally behind a Cast from a packed type) as the graph output."""
    stored = _init("w", codes, cast_from or dtype)
    inits = [stored, _init("s", 2.0**-frac, np.float32)]
    nodes, src = [], "w"
    if cast_from is not None:
        to = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        nodes.append(helper.make_node("Cast", ["w"], ["wc"], name="cast", to=to))
        src = "wc"
    dq_in = [src, "s"]
    if zp is not None:
        inits.append(_init("zp", zp, dtype))
        dq_in.append("zp")
    nodes.append(helper.make_node("DequantizeLinear", dq_in, ["y"], name="DQ"))
    meta = {"onnxopt.bit_widths": json.dumps(bit_widths)} if bit_widths else None
    return _model(nodes, inits, ["y"], meta)


def _only(model):
    (tensor,) = read_formats(model).values()
    assert tensor.role is Role.CONSTANT
    dq = run(model, X)[0]
    np.testing.assert_array_equal(tensor.values(), dq.astype(np.float64))
    return tensor


def test_int8_weights_with_metadata_width():
    tensor = _only(constant([[-8, 7], [3, 0]], np.int8, 4, zp=0, bit_widths={"w": 4}))
    assert (tensor.fmt.width, tensor.fmt.frac, tensor.fmt.signed) == (4, 4, True)


def test_uint8_weights_with_zero_point_128_are_signed():
    codes = np.array([[0, 255], [128, 130]])  # -128, 127, 0, 2
    tensor = _only(constant(codes, np.uint8, 5, zp=128))
    assert (tensor.fmt.width, tensor.fmt.signed) == (8, True)
    np.testing.assert_array_equal(tensor.codes, [[-128, 127], [0, 2]])


def test_packed_int4_behind_a_cast():
    import ml_dtypes

    tensor = _only(constant([[-8, 7], [1, 2]], np.int8, 2, zp=0, cast_from=ml_dtypes.int4))
    assert tensor.fmt.width == 8  # no metadata: as wide as the container the DQ reads
    assert tensor.nodes == ("cast", "DQ")


@pytest.mark.parametrize("explicit_zp", [False, True])
def test_bias_at_the_accumulator_scale_reads_its_own_grid(explicit_zp):
    # a 6-bit bias with frac 2, stored at the accumulator scale 2**-7 (shifted by 5 bits)
    bias = np.array([-32, 31, 5, 0]) * 2**5
    zp = 0 if explicit_zp else None
    tensor = _only(constant(bias, np.int32, 7, zp=zp, bit_widths={"w": 6}))
    assert (tensor.fmt.width, tensor.fmt.frac) == (6, 2)
    np.testing.assert_array_equal(tensor.codes, [-32, 31, 5, 0])


def test_int32_bias_without_metadata_is_as_wide_as_its_values():
    tensor = _only(constant([1000, -3], np.int32, 9))
    assert (tensor.fmt.width, tensor.fmt.frac) == (11, 9)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (constant([1, 2], np.int8, 0, zp=0), None),
        (activation(np.uint8, 3), "zero point 3 in uint8 is not fixed point"),
        (activation(np.int8, 5), "zero point 5 in int8"),
        (activation(np.uint8, 0, code_clip=(0, 100)), "clips codes to [0, 100]"),
        (constant([1, 2], np.int32, 3, bit_widths={"w": 40}), "width 40 bits is over 32"),
        (constant([100, 2], np.int32, 3, bit_widths={"w": 4}), "do not fit the 4 bits"),
    ],
)
def test_refusals_name_the_node_or_tensor(model, message):
    if message is None:
        assert read_formats(model)
        return
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_formats(model)


def test_a_scale_that_is_no_power_of_two_is_refused():
    model = activation(np.uint8, 0)
    model.graph.initializer[0].CopyFrom(_init("s", 0.3, np.float32))
    with pytest.raises(UsageError, match="node 'DQ': scale 0.3 is not a power of two"):
        read_formats(model)


def test_onnxopt_mixed_model_formats_are_the_configured_widths():
    model = prepare_user_model(plain_mlp(relu_after=(1,)), "plain.onnx").model
    x = inputs(300, 12)
    config = mixed_config(gemm_names(model))
    quantized = quantize(model, x, config)
    formats = read_formats(quantized)
    by_role = {r: [t for t in formats.values() if t.role is r] for r in Role}
    assert len(by_role[Role.ACTIVATION]) == 3 and len(by_role[Role.CONSTANT]) == 6
    for name, widths in config["by_name"].items():
        node = next(n for n in quantized.graph.node if n.name == name)
        data_in, weight, bias = (formats[v] for v in node.input[:3])
        assert (data_in.fmt.width, weight.fmt.width, bias.fmt.width) == (
            widths["data_in_width"],
            widths["weight_width"],
            widths["bias_width"],
        )
        # the input after a ReLU is unsigned, the others signed (uint8 + 128)
        assert data_in.fmt.signed == (name != "Gemm_3")
