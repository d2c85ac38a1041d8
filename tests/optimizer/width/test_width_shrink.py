"""Shrinking keeps the important channels and refits consumers by ridge least squares."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from width_models import (
    Net,
    check,
    digits_cnn,
    gemm_chain,
    initializer,
    matmul_sequences_model,
    nhwc_linear_model,
    numpy_forward,
    residual_model,
    run,
)

from onnxopt.optimizer.width import WidthConfig, WidthScaler, analyze_channels
from onnxopt.optimizer.width.refit import Gram, im2col

HIDDEN = ("node_linear", "node_linear_1", "node_linear_2")


def _config(m: float, **options) -> WidthConfig:
    return WidthConfig(layers={n: {"channel_multiplier": m} for n in HIDDEN}, **options)


def _accuracy(model: onnx.ModelProto, split) -> float:
    return float((run(model, split.x).argmax(1) == split.y).mean())


@pytest.fixture(scope="module")
def wide(exported_recipe, digits):
    model = onnx.load(exported_recipe("digits-wide"))
    return model, WidthScaler(model, digits.train.x)


def test_digits_wide_at_quarter_width_keeps_accuracy_and_beats_truncation(wide, digits):
    model, scaler = wide
    refit = scaler.scale(_config(0.25))
    truncated = scaler.scale(_config(0.25, refit="none"))
    for result in (refit, truncated):
        check(result.model)
        assert len(result.model.graph.node) == len(model.graph.node)
        assert result.nodes_changed == (
            "node_linear",
            "node_linear_1",
            "node_linear_2",
            "node_linear_3",
        )
        assert [c.new_width for c in result.changes] == [256, 256, 256]
    # the same channels survive in both: the first layer's kept rows are identical
    np.testing.assert_array_equal(
        initializer(refit.model, "node_linear", 1), initializer(truncated.model, "node_linear", 1)
    )
    assert [r.node for r in refit.refits] == ["node_linear_1", "node_linear_2", "node_linear_3"]
    base_acc, refit_acc = _accuracy(model, digits.test), _accuracy(refit.model, digits.test)
    trunc_acc = _accuracy(truncated.model, digits.test)
    assert refit_acc >= base_acc - 0.015
    assert refit_acc > trunc_acc + 0.1
    x, original = digits.test.x, run(model, digits.test.x)
    refit_err = np.mean((run(refit.model, x) - original) ** 2)
    assert refit_err < 0.2 * np.mean((run(truncated.model, x) - original) ** 2)
    np.testing.assert_allclose(
        numpy_forward(refit.model, x[:50]), run(refit.model, x[:50]), rtol=1e-4, atol=1e-4
    )


def test_ridge_keeps_an_underdetermined_refit_well_posed(exported_recipe, digits):
    # 0.5x leaves 513 unknowns per output for 256 calibration samples
    model = onnx.load(exported_recipe("digits-wide"))
    scaler = WidthScaler(model, digits.calibration.x)
    ridge, plain = scaler.scale(_config(0.5)), scaler.scale(_config(0.5, ridge=0.0))
    assert all(r.unknowns > r.samples for r in ridge.refits)
    base = _accuracy(model, digits.val)
    assert _accuracy(ridge.model, digits.val) >= base - 0.015
    assert _accuracy(plain.model, digits.val) < _accuracy(ridge.model, digits.val)


def test_the_base_model_is_never_mutated_and_each_call_is_new(wide):
    model, scaler = wide
    before = scaler._proto.SerializeToString()
    first = scaler.scale(_config(0.125))
    second = scaler.scale(_config(0.125))
    assert scaler._proto.SerializeToString() == before
    assert first.model is not second.model
    assert first.model.SerializeToString() == second.model.SerializeToString()


def test_scale_first_then_quantize(wide, digits):
    from onnxopt.config.quantization import QuantizationConfig
    from onnxopt.optimizer.quantization.quantizer import Quantizer

    _, scaler = wide
    scaled = scaler.scale(_config(0.25)).model
    quantized = Quantizer(scaled, digits.calibration.x).quantize(QuantizationConfig()).model
    check(quantized)
    assert _accuracy(quantized, digits.test) >= _accuracy(scaled, digits.test) - 0.015
    # the other order is refused, with the reason
    frozen = " ".join(g.describe() for g in analyze_channels(quantized).frozen_groups)
    assert not analyze_channels(quantized).scalable_groups
    assert (
        "Gemm node 'node_linear_1' has quantized weights (DequantizeLinear); scale before" in frozen
    )


SMALL = {  # model, input shape, nodes refitted after halving every group
    "residual": (residual_model, (8,), ["fc1", "fc2"]),
    "matmul-sequences": (matmul_sequences_model, (4, 8), ["mm1"]),
    "conv-transpose-matmul": (nhwc_linear_model, (2, 3, 3), ["mm1"]),
    "digits-cnn-bn-depthwise": (
        lambda: digits_cnn(bn=True, depthwise=True),
        (1, 8, 8),
        ["conv1", "conv2", "head"],
    ),
}


@pytest.mark.parametrize("name", SMALL)
def test_halving_every_group_refits_consumers_and_beats_truncation(name):
    build, shape, refitted = SMALL[name]
    model = build()
    x = np.random.default_rng(4).uniform(-1, 2, (64, *shape)).astype(np.float32)
    scaler = WidthScaler(model, x)
    halves = {g.name: 0.5 for g in scaler.analysis.scalable_groups}
    result = scaler.scale_groups(halves)
    truncated = scaler.scale_groups(halves, WidthConfig(refit="none"))
    check(result.model)
    assert len(result.model.graph.node) == len(model.graph.node)
    assert [r.node for r in result.refits] == refitted
    out, original = run(result.model, x), run(model, x)
    np.testing.assert_allclose(numpy_forward(result.model, x), out, rtol=1e-4, atol=1e-4)
    truncation_error = np.mean((run(truncated.model, x) - original) ** 2)
    assert np.mean((out - original) ** 2) < truncation_error


def _rank_deficient_conv(seed=0):
    """conv0 has 4 channels of which 2 are linear combinations of the others (no activation)."""
    net = Net(seed)
    x = net.conv(net.conv("x", 2, 4, "conv0"), 4, 3, "conv1")
    model = net.model(["N", 2, 6, 6], x, ["N", 3, 6, 6])
    inits = {t.name: t for t in model.graph.initializer}
    w, b = (numpy_helper.to_array(inits[n]).copy() for n in ("conv0.w", "conv0.b"))
    for c, (a0, a1) in ((2, (0.7, -1.3)), (3, (-0.4, 0.9))):
        w[c], b[c] = a0 * w[0] + a1 * w[1], a0 * b[0] + a1 * b[1]
    inits["conv0.w"].CopyFrom(numpy_helper.from_array(w, "conv0.w"))
    inits["conv0.b"].CopyFrom(numpy_helper.from_array(b, "conv0.b"))
    return model


def test_conv_refit_recovers_the_output_when_dropped_channels_are_redundant():
    model = _rank_deficient_conv()
    x = np.random.default_rng(0).standard_normal((12, 2, 6, 6)).astype(np.float32)
    scaler = WidthScaler(model, x)
    result = scaler.scale_groups({"conv0_out": 0.5}, WidthConfig(ridge=0.0))
    truncated = scaler.scale_groups({"conv0_out": 0.5}, WidthConfig(refit="none"))
    check(result.model)
    assert result.nodes_changed == ("conv0", "conv1")
    assert initializer(result.model, "conv1", 1).shape == (3, 2, 3, 3)
    (report,) = result.refits
    assert report.relative_error < 1e-6 and report.samples == 12 * 36 and report.unknowns == 19
    np.testing.assert_allclose(run(result.model, x), run(model, x), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(
        numpy_forward(result.model, x), run(result.model, x), rtol=1e-4, atol=1e-4
    )
    assert np.abs(run(truncated.model, x) - run(model, x)).max() > 0.1


def test_gemm_refit_is_the_ridge_solution_of_the_kept_activations():
    model = gemm_chain([5, 8, 3], relu=True, trans_b=(0,))
    x = np.random.default_rng(1).standard_normal((40, 5)).astype(np.float32)
    result = WidthScaler(model, x).scale_groups({"fc0_out": 0.5}, WidthConfig(ridge=0.01))
    h = np.maximum(x @ initializer(result.model, "fc0", 1) + initializer(result.model, "fc0", 2), 0)
    target = numpy_forward(model, x)
    design = np.hstack([h - h.mean(0), np.ones((len(h), 1))])
    gram = design[:, :-1].T @ design[:, :-1]
    lam = 0.01 * np.trace(gram) / len(gram)
    w = np.linalg.solve(
        gram + lam * np.eye(len(gram)), design[:, :-1].T @ (target - target.mean(0))
    )
    b = target.mean(0) - h.mean(0) @ w
    np.testing.assert_allclose(initializer(result.model, "fc1", 1), w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(initializer(result.model, "fc1", 2), b, rtol=1e-4, atol=1e-5)


def test_gram_solve_matches_least_squares():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((50, 2))
    gram = Gram(4, 2)
    gram.add(x[:20], y[:20])
    gram.add(x[20:], y[20:])
    fit = gram.solve(0.0, intercept=True)
    expected = np.linalg.lstsq(np.hstack([x, np.ones((50, 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(np.vstack([fit.weight, fit.bias]), expected, atol=1e-10)
    residual = np.sum((x @ fit.weight + fit.bias - y) ** 2) / np.sum((y - y.mean(0)) ** 2)
    assert fit.relative_error == pytest.approx(residual)


@pytest.mark.parametrize(
    "attrs",
    [
        {"pads": [1, 0, 2, 1], "strides": [2, 1], "dilations": [1, 2]},
        {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
        {"auto_pad": "SAME_LOWER", "strides": [1, 2]},
        {"auto_pad": "VALID", "strides": [1, 2]},
    ],
)
def test_im2col_matches_onnxruntime_conv(attrs):
    net = Net(7)
    y = net.op("Conv", ["x", net.rand("w", (4, 3, 3, 2))], "conv", **attrs)
    model = net.model(["N", 3, 7, 6], y, ["N", 4, "H", "W"])
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6)).astype(np.float32)
    expected = run(model, x)
    spec = analyze_channels(model).weight_nodes["conv"]
    cols = im2col(x, spec.attrs, expected.shape[2:])
    got = cols @ initializer(model, "conv", 1).reshape(4, -1).T
    np.testing.assert_allclose(
        got, np.moveaxis(expected, 1, -1).reshape(-1, 4), rtol=1e-5, atol=1e-5
    )
