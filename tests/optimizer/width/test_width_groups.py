"""Channel groups: what is scaled together, what is joined, what is frozen and why."""

from __future__ import annotations

import numpy as np
import pytest
from width_models import Net, digits_cnn, gemm_chain, jsc_three_linear_layers, softmax_model

from onnxopt.optimizer.width import EditKind, analyze_channels


def _reasons(analysis) -> dict[str, str]:
    return {g.name: "; ".join(g.reasons) for g in analysis.frozen_groups}


def test_gemm_chain_has_one_group_per_hidden_layer_and_freezes_the_ends():
    analysis = analyze_channels(gemm_chain([8, 6, 5, 3], bn=True, trans_b=(1, 0)))
    assert [(g.name, g.width) for g in analysis.scalable_groups] == [("fc0_out", 6), ("fc1_out", 5)]
    assert _reasons(analysis) == {"x": "graph input 'x'", "fc2_out": "reaches graph output 'y'"}
    g0 = analysis.group("fc0_out")
    assert g0.producers == ("fc0",) and g0.consumers == ("fc1",)
    kinds = sorted(
        (analysis.node_names[e.node], e.input_index, e.kind.value, e.axis) for e in g0.edits
    )
    # producer rows (transB=1: axis 0) and bias, the four BN vectors, consumer columns (transB=0)
    assert kinds == [("bn0", k, "slice", 0) for k in range(1, 5)] + [
        ("fc0", 1, "slice", 0),
        ("fc0", 2, "slice", 0),
        ("fc1", 1, "split", 0),
    ]


def test_jsc_three_linear_layers_shape():
    analysis = analyze_channels(jsc_three_linear_layers())
    assert [g.name for g in analysis.scalable_groups] == ["fc0_out", "fc1_out"]
    frozen = _reasons(analysis)
    assert frozen["x"] == "graph input 'x'"  # the input BatchNorm and Relu belong to it
    assert frozen["fc2_out"] == "reaches graph output 'y'"
    assert dict(analysis.input_group) == {"fc0": 0, "fc1": 1, "fc2": 2}


def test_digits_cnn_follows_channels_through_pooling_and_the_unit_reshape():
    analysis = analyze_channels(digits_cnn(bn=True, depthwise=True))
    assert [(g.name, g.width) for g in analysis.scalable_groups] == [
        ("conv0_out", 16),
        ("conv1_out", 32),
        ("conv2_out", 64),
    ]
    g0, g2 = analysis.group("conv0_out"), analysis.group("conv2_out")
    assert g0.consumers == ("conv1",)  # the depthwise Conv is a member, not a consumer
    assert {e.kind for e in g0.edits if analysis.node_names[e.node] == "dw"} == {
        EditKind.SLICE,
        EditKind.GROUP_ATTR,
    }
    shape_edits = [e for e in g2.edits if e.kind is EditKind.SHAPE_ENTRY]
    assert [(analysis.node_names[e.node], e.axis) for e in shape_edits] == [("flat", 1)]


def test_residual_add_joins_groups():
    net = Net()
    a = net.op("Relu", [net.gemm("x", 4, 6, "fc0")], "r0")
    b = net.op("Relu", [net.gemm(a, 6, 6, "fc1")], "r1")
    s = net.op("Add", [a, b], "res")
    analysis = analyze_channels(net.model(["N", 4], net.gemm(s, 6, 3, "fc2"), ["N", 3]))
    (group,) = analysis.scalable_groups
    assert group.producers == ("fc0", "fc1") and group.consumers == ("fc1", "fc2")
    assert group.notes == ("joined by Add node 'res'",)
    assert analysis.input_group["fc1"] == analysis.output_group["fc1"] == group.index


def _flatten_model():
    net = Net()
    x = net.op("Relu", [net.conv("x", 1, 4, "conv0")], "r0")
    x = net.op(
        "Flatten", [net.op("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])], "flat"
    )
    return net.model(["N", 1, 4, 4], net.gemm(x, 16, 3, "fc"), ["N", 3])


def _concat_model():
    net = Net()
    a, b = net.gemm("x", 4, 5, "fc_a"), net.gemm("x", 4, 6, "fc_b")
    cat = net.op("Concat", [a, b], "cat", axis=1)
    return net.model(["N", 4], net.gemm(cat, 11, 2, "fc"), ["N", 2])


def _batch_concat_model():
    net = Net()
    a = net.gemm("x", 4, 5, "fc_a")
    cat = net.op("Concat", [a, net.const("extra", np.ones((1, 5), np.float32))], "cat", axis=0)
    return net.model(["N", 4], net.gemm(cat, 5, 2, "fc"), ["M", 2])


def _quantized_weight_model():
    net = Net()
    w = net.const("w_q", np.ones((5, 4), dtype=np.int8))
    dq = net.op("DequantizeLinear", [w, net.const("s", np.float32(0.1))], "dq_w")
    x = net.op("Gemm", ["x", dq], "fc0", transB=1)
    return net.model(["N", 4], net.gemm(x, 5, 2, "fc1"), ["N", 2])


def _grouped_conv_model():
    net = Net()
    x = net.conv("x", 1, 4, "conv0")
    x = net.conv(x, 4, 4, "grouped", group=2)
    x = net.op("GlobalAveragePool", [x], "gap")
    x = net.op("Flatten", [x], "flat")
    return net.model(["N", 1, 4, 4], net.gemm(x, 4, 2, "fc"), ["N", 2])


@pytest.mark.parametrize(
    ("build", "group", "reason"),
    [
        (
            _flatten_model,
            "conv0_out",
            "Flatten node 'flat' mixes channels with space ((N, 4, 2, 2) -> (N, 16))",
        ),
        (
            _concat_model,
            "fc_a_out",
            (
                "Concat node 'cat' joins the channels of 2 tensors into one axis (axis 1); the "
                "analysis does not split a joined axis back into its groups, so it freezes them"
            ),
        ),
        (_concat_model, "fc_b_out", "Concat node 'cat' joins the channels of 2 tensors"),
        (_batch_concat_model, "fc_a_out", "Concat node 'cat' joins 2 tensors along axis 0"),
        (_quantized_weight_model, "dq_w_out", "DequantizeLinear node 'dq_w'"),
        (_quantized_weight_model, "fc1_out", "graph output 'y'"),
        (_grouped_conv_model, "conv0_out", "Conv node 'grouped' is a grouped Conv (group=2)"),
    ],
)
def test_frozen_groups_are_reported_by_name_with_the_reason(build, group, reason):
    analysis = analyze_channels(build())
    assert reason in _reasons(analysis)[group]
    assert analysis.group(group).describe().endswith(")")


def test_quantized_weights_are_not_a_weight_node():
    analysis = analyze_channels(_quantized_weight_model())
    assert "fc0" not in analysis.weight_nodes
    frozen = " ".join(g.describe() for g in analysis.frozen_groups)
    assert "has quantized weights (DequantizeLinear); scale before quantizing" in frozen


def test_activation_qdq_is_followed():
    net = Net()
    x = net.op("Relu", [net.gemm("x", 4, 6, "fc0")], "r0")
    scale, zero = net.const("s", np.float32(0.05)), net.const("z", np.uint8(0))
    x = net.op(
        "DequantizeLinear", [net.op("QuantizeLinear", [x, scale, zero], "q"), scale, zero], "dq"
    )
    analysis = analyze_channels(net.model(["N", 4], net.gemm(x, 6, 2, "fc1"), ["N", 2]))
    assert [g.name for g in analysis.scalable_groups] == ["fc0_out"]


def test_matmul_with_bias_add_on_sequences():
    net = Net()
    x = net.op(
        "Add",
        [net.op("MatMul", ["x", net.rand("w0", (8, 6))], "mm0"), net.rand("b0", (6,))],
        "bias0",
    )
    x = net.op("MatMul", [net.op("Relu", [x], "r0"), net.rand("w1", (6, 3))], "mm1")
    analysis = analyze_channels(net.model(["N", 4, 8], x, ["N", 4, 3]))
    assert analysis.weight_nodes["mm0"].bias == (1, 1)
    (group,) = analysis.scalable_groups
    assert group.consumers == ("mm1",) and group.width == 6


def test_analysis_is_plain_data_and_does_not_touch_the_model():
    model = digits_cnn()
    before = model.SerializeToString()
    analysis = analyze_channels(model)
    assert model.SerializeToString() == before
    assert analysis.ancestors["head"] == frozenset({"conv0", "conv1", "conv2"})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [1, -2, None, 2])
def test_softmax_before_opset_13_freezes_every_channel_axis_it_flattens(op, axis):
    analysis = analyze_channels(softmax_model(11, op, axis))
    first = 2 if axis == 2 else 1  # the default axis before opset 13 is 1
    assert analysis.scalable_groups == ()
    assert _reasons(analysis)["mm0_out"] == (
        f"{op} node 'sm' at opset 11 normalizes axes {first}..2 as one (before opset 13, "
        f"axis={first} flattens the input to 2-D there), which mixes the channels on axis 2"
    )


def test_softmax_before_opset_13_passes_channels_before_its_axis():
    analysis = analyze_channels(softmax_model(11, axis=2, conv=True))
    assert [g.name for g in analysis.scalable_groups] == ["conv0_out"]
    assert analysis.group("conv0_out").consumers == ("conv1",)


def test_softmax_from_opset_13_freezes_only_its_own_axis():
    assert [g.name for g in analyze_channels(softmax_model(13)).scalable_groups] == ["mm0_out"]
    reasons = _reasons(analyze_channels(softmax_model(13, axis=-1)))
    assert reasons["mm0_out"] == "Softmax node 'sm' normalizes across the channels (axis 2)"
