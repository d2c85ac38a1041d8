"""Widening is function-preserving: copies of channels, incoming weights divided among copies."""

from __future__ import annotations

import numpy as np
import pytest
from width_models import (
    ATOL,
    RTOL,
    check,
    digits_cnn,
    gemm_chain,
    initializer,
    jsc_three_linear_layers,
    matmul_sequences_model,
    nhwc_linear_model,
    numpy_forward,
    qdq_model,
    residual_model,
    run,
    softmax_model,
)

from onnxopt.optimizer.width import WidthConfig, WidthScaler

MODELS = {
    "gemm-bn-chain": (
        lambda: gemm_chain([8, 6, 5, 3], bn=True, trans_b=(1, 0)),
        (8,),
        "fc0 bn0 fc1 bn1 fc2",
    ),
    "jsc-three-linear-layers": (jsc_three_linear_layers, (16,), "fc0 fc1 fc2"),
    "digits-cnn-bn-depthwise": (
        lambda: digits_cnn(bn=True, depthwise=True),
        (1, 8, 8),
        "conv0 bn0 dw conv1 conv2 flat head",
    ),
    "residual": (residual_model, (8,), "fc0 fc1 bn1 fc2"),
    "activation-qdq": (qdq_model, (8,), "fc0 fc1"),
    "matmul-sequences": (matmul_sequences_model, (4, 8), "mm0 bias0 mm1"),
    "conv-transpose-matmul": (nhwc_linear_model, (2, 3, 3), "conv0 mm1"),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("multiplier", [1.5, 2.0, 3.0])
def test_widening_every_group_preserves_the_function(name, multiplier):
    build, shape, changed = MODELS[name]
    model = build()
    x = np.random.default_rng(1).uniform(-1, 2, (9, *shape)).astype(np.float32)
    scaler = WidthScaler(model, x)
    result = scaler.scale_groups({g.name: multiplier for g in scaler.analysis.scalable_groups})
    check(result.model)
    assert len(result.model.graph.node) == len(model.graph.node)
    assert result.nodes_changed == tuple(changed.split()) and result.refits == ()
    assert all(c.new_width == int(c.old_width * multiplier + 0.5) for c in result.changes)
    widened = run(result.model, x)
    np.testing.assert_allclose(widened, run(model, x), rtol=RTOL, atol=ATOL)
    if name != "activation-qdq":  # float64 numpy and float32 Q/DQ may round ties differently
        np.testing.assert_allclose(widened, numpy_forward(model, x), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(numpy_forward(result.model, x), widened, rtol=1e-4, atol=1e-4)


def test_batchnorm_parameters_and_running_statistics_follow_their_channels():
    model = gemm_chain([8, 6, 5, 3], bn=True)
    x = np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)
    result = WidthScaler(model, x).scale_groups({"fc0_out": 2.5})
    (change,) = result.changes
    assert (change.old_width, change.new_width) == (6, 15)
    w0, w0_new = initializer(model, "fc0", 1), initializer(result.model, "fc0", 1)
    # every new channel is an exact copy of one old channel: recover the index map from fc0's rows
    index = [int(np.flatnonzero((w0 == row).all(axis=1))[0]) for row in w0_new]
    assert index[:6] == list(range(6)) and sorted(set(index)) == list(range(6))
    for k in range(1, 5):  # scale, bias, running mean, running var
        np.testing.assert_array_equal(
            initializer(result.model, "bn0", k), initializer(model, "bn0", k)[index]
        )
    copies = np.bincount(index)[index]
    np.testing.assert_allclose(
        initializer(result.model, "fc1", 1), initializer(model, "fc1", 1)[:, index] / copies
    )


def test_widening_copies_the_most_important_channels_first():
    model = gemm_chain([8, 6, 3])
    x = np.random.default_rng(3).standard_normal((32, 8)).astype(np.float32)
    scaler = WidthScaler(model, x)
    config = WidthConfig(importance="weight_norm", refit="none")
    result = scaler.scale_groups({"fc0_out": 1.5}, config)
    w0, w1 = initializer(model, "fc0", 1), initializer(model, "fc1", 1)
    path_norm = np.linalg.norm(w0, axis=1) * np.linalg.norm(w1, axis=0)
    copied = [
        int(np.flatnonzero((w0 == row).all(axis=1))[0])
        for row in initializer(result.model, "fc0", 1)[6:]
    ]
    assert copied == list(np.argsort(-path_norm, kind="stable")[:3])


@pytest.mark.parametrize(
    ("opset", "axis", "conv", "scalable"),
    [
        (11, 1, False, []),  # the audit's case: axis 1 flattens axes 1..2, channels on 2 mix
        (13, 1, False, ["mm0_out"]),  # from opset 13 only axis 1 is normalized
        (11, 2, True, ["conv0_out"]),  # channels on axis 1, before the flattened axes 2..3
        (13, 2, True, ["conv0_out"]),
    ],
)
def test_softmax_widening_preserves_the_function_at_every_opset(opset, axis, conv, scalable):
    model = softmax_model(opset, axis=axis, conv=conv)
    shape = (2, 3, 3) if conv else (4, 8)
    x = np.random.default_rng(4).uniform(-1, 2, (5, *shape)).astype(np.float32)
    scaler = WidthScaler(model, x)
    assert [g.name for g in scaler.analysis.scalable_groups] == scalable
    result = scaler.scale_groups({name: 2.0 for name in scalable})
    check(result.model)
    np.testing.assert_allclose(run(result.model, x), run(model, x), rtol=RTOL, atol=ATOL)
