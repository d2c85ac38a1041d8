"""Candidates built with the search's caches (quantizer per width choice, refits per group
choice) are byte-identical to candidates built from scratch, point by point."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config.search import load_search_config
from onnxopt.optimizer.search.candidate import CandidateBuilder
from onnxopt.optimizer.search.context import SearchContext

WIDTHS = (64, 24, 24, 24, 10)
LAYERS = ("fc1", "fc2", "fc3", "out")
JOINT = """
[search.width]
importance = "activation"
refit = "ridge"
[search.width.layers.fc1]
mode = "output_only"
channel_multiplier = [0.5, 1.0]
[search.width.layers.fc2]
mode = "output_only"
channel_multiplier = [0.5, 1.0]
[search.width.layers.fc3]
mode = "output_only"
channel_multiplier = [0.5, 1.0]
[search.quantization.by_type.linear]
weight_width = [4, 8]
data_in_width = [4, 8]
[search.strategy]
sampler = "random"
n_trials = 10
[search.metrics.accuracy]
"""


def _mlp() -> onnx.ModelProto:
    """A 64-24-24-24-10 Gemm/Relu chain with random weights (three scalable groups)."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i, name in enumerate(LAYERS):
        w = rng.standard_normal((WIDTHS[i], WIDTHS[i + 1])).astype(np.float32) * 0.3
        b = rng.standard_normal(WIDTHS[i + 1]).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
        nodes.append(helper.make_node("Gemm", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], name))
        x = f"{name}.y"
        if name != "out":
            nodes.append(helper.make_node("Relu", [x], [f"{name}.r"], f"{name}_relu"))
            x = f"{name}.r"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 10])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


@pytest.fixture
def context(tmp_path):
    model = tmp_path / "mlp.onnx"
    onnx.save(_mlp(), model)
    path = tmp_path / "search.toml"
    path.write_text(f'[model]\nonnx = "{model}"\n[data]\ndataset = "digits"\n{JOINT}')
    return SearchContext.prepare(load_search_config(path), tmp_path / "run")


def _points(space):
    names = [d.name for d in space.dimensions]
    grid = list(itertools.product(*(d.choices for d in space.dimensions)))
    picked = grid[::3][:8]
    # revisit in another order: later points reuse fits made for earlier ones, and back
    return [dict(zip(names, p, strict=True)) for p in picked + picked[::-1]]


def test_cached_candidates_are_byte_identical_to_fresh_ones(context, monkeypatch):
    from onnxopt.optimizer.width import scaler

    ctx = context
    cached = ctx.builder
    points = _points(ctx.space)
    assert len({tuple(sorted(p.items())) for p in points}) == 8
    widths = {tuple(sorted(ctx.space.decode(p).width.items())) for p in points}
    assert len(widths) >= 4  # several width choices, some shared by two quantizations
    fits = []
    real_fit = scaler.fit_consumer
    monkeypatch.setattr(scaler, "fit_consumer", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    built = [cached.build(ctx.space, ctx.space.decode(p)).model.SerializeToString() for p in points]
    refits = sum(len(t.refits) for t in _scaled(cached, ctx, points))
    assert 0 < len(fits) < refits, "some refits came from the cache"
    fresh_models = {}
    for params, got in zip(points, built, strict=True):
        choice = ctx.space.decode(params)
        key = tuple(sorted(params.items()))
        if key not in fresh_models:
            fresh = CandidateBuilder(
                cached.base, ctx.dataset, ctx.config.search.width,
                ctx.config.model.fixed_values(),
            )  # fmt: skip
            fresh_models[key] = fresh.build(ctx.space, choice).model.SerializeToString()
        assert got == fresh_models[key], f"cached candidate differs at {params}"
    shrunk = [onnx.load_from_string(m) for m in fresh_models.values()]
    assert len({m.SerializeToString() for m in shrunk}) == 8


def _scaled(builder, ctx, points):
    """The scale results of the points' distinct width choices (refits counted from them)."""
    widths = {tuple(sorted(ctx.space.decode(p).width.items())) for p in points}
    return [builder.scaler.scale_groups(dict(w), ctx.config.search.width) for w in widths]


def test_workers_share_each_width_choices_refit_and_ranges(context, tmp_path, monkeypatch):
    """Two builders on one shared folder (two workers): what the first refitted and
    calibrated the second reads, byte for byte, without refitting or calibrating; a damaged
    shared file is computed again; another identity shares nothing."""
    from onnxopt.optimizer.quantization import quantizer

    ctx = context
    points = _points(ctx.space)[:8]

    def builder(identity: str) -> CandidateBuilder:
        b = CandidateBuilder(
            ctx.builder.base, ctx.dataset, ctx.config.search.width,
            ctx.config.model.fixed_values(),
        )  # fmt: skip
        b.share(tmp_path / "shared", identity)
        return b

    first = [builder("a").build(ctx.space, ctx.space.decode(p)).model for p in points]
    calls = []
    real = quantizer.calibrate
    monkeypatch.setattr(quantizer, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    second = builder("a")
    monkeypatch.setattr(second.scaler, "scale_groups", lambda *a, **k: pytest.fail("refit"))
    again = [second.build(ctx.space, ctx.space.decode(p)).model for p in points]
    assert [m.SerializeToString() for m in again] == [m.SerializeToString() for m in first]
    assert calls == []  # every range was read from the shared folder
    for damaged in (tmp_path / "shared").glob("*/*"):
        damaged.write_bytes(b"\x00 not a model, not JSON")
    third = builder("a")
    redone = [third.build(ctx.space, ctx.space.decode(p)).model for p in points]
    assert [m.SerializeToString() for m in redone] == [m.SerializeToString() for m in first]
    assert calls, "damaged ranges are computed again"
    other = builder("b")
    assert other._shared != third._shared
