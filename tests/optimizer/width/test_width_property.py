"""Property: any multipliers on a random Gemm chain give consistent shapes and a runnable model."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from width_models import ATOL, RTOL, check, gemm_chain, initializer, numpy_forward, run

from onnxopt.optimizer.width import WidthConfig, WidthScaler

MULTIPLIERS = [0.5, 0.75, 1.0, 1.5, 2.0, 3.0]  # >= 0.5, so no group rounds to zero channels


@st.composite
def chains(draw):
    depth = draw(st.integers(2, 4))
    widths = draw(st.lists(st.integers(1, 9), min_size=depth + 1, max_size=depth + 1))
    trans_b = tuple(draw(st.lists(st.sampled_from([0, 1]), min_size=1, max_size=depth)))
    options = {"bn": draw(st.booleans()), "relu": draw(st.booleans()), "trans_b": trans_b}
    multipliers = draw(
        st.lists(st.sampled_from(MULTIPLIERS), min_size=depth - 1, max_size=depth - 1)
    )
    sides = draw(
        st.lists(st.sampled_from(["output", "input"]), min_size=depth - 1, max_size=depth - 1)
    )
    refit = draw(st.sampled_from(["ridge", "none"]))
    samples = draw(st.integers(2, 24))
    return widths, options, multipliers, sides, refit, samples


def _layers(multipliers, sides) -> dict[str, dict]:
    """Config entries for hidden group i (fc{i} -> fc{i+1}), one entry per node, 'both' on reuse."""
    layers: dict[str, dict] = {}
    for i, (m, side) in enumerate(zip(multipliers, sides, strict=True)):
        producer, consumer = f"fc{i}", f"fc{i + 1}"
        entry = layers.get(producer)
        if side == "output" and entry is None:
            layers[producer] = {"mode": "output_only", "channel_multiplier": m}
        elif side == "output" and entry["channel_multiplier"] == m:
            entry["mode"] = "both"
        else:
            layers[consumer] = {"mode": "input_only", "channel_multiplier": m}
    return layers


@settings(max_examples=30, deadline=None)
@given(chains())
def test_random_multipliers_on_a_gemm_chain_give_consistent_shapes(case):
    widths, options, multipliers, sides, refit, samples = case
    model = gemm_chain(widths, **options)
    x = np.random.default_rng(samples).standard_normal((samples, widths[0])).astype(np.float32)
    config = WidthConfig(layers=_layers(multipliers, sides), refit=refit)
    result = WidthScaler(model, x).scale(config)
    check(result.model)
    assert len(result.model.graph.node) == len(model.graph.node)
    expected = [widths[0]] + [
        int(w * m + 0.5) for w, m in zip(widths[1:-1], multipliers, strict=True)
    ]
    expected.append(widths[-1])
    for i in range(len(widths) - 1):
        w = initializer(result.model, f"fc{i}", 1)
        in_out = w.shape[::-1] if options["trans_b"][i % len(options["trans_b"])] else w.shape
        assert tuple(in_out) == (expected[i], expected[i + 1])
    out = run(result.model, x)
    assert out.shape == (samples, widths[-1]) and np.isfinite(out).all()
    np.testing.assert_allclose(numpy_forward(result.model, x), out, rtol=1e-4, atol=1e-4)
    if all(m >= 1 for m in multipliers):
        np.testing.assert_allclose(out, run(model, x), rtol=RTOL, atol=ATOL)
