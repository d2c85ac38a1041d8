"""Every kind of third-party model through evaluate, quantize, scale and a 10-trial search.

The models (``zoo.KINDS``) carry the traits of files other tools write. Each command must
succeed without hand repair, and what it produces is checked against the original model run
by onnxruntime on the same test split: evaluate reports the original's accuracy, the 8-bit
file agrees with the original on nearly every sample, the scaled file keeps the original's
inputs and output shape with fewer weights, and the search exports models that agree too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from tests.foreign import zoo

AGREEMENT_8_BIT = 0.95  # share of test samples whose predicted class matches the original's


def _run(args: list[str]):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _outputs(path: Path, kind: zoo.Kind, split: str = "test") -> np.ndarray:
    """Outputs of a file onnxopt wrote, fed the split's inputs (all of them, ints as ints)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in kind.feeds(split).items() if k in names})[0]


def _predicted(kind: zoo.Kind, outputs: np.ndarray) -> np.ndarray:
    return (outputs[:, 0] > 0.5) if kind.binary else outputs.argmax(1)


def _agreement(kind: zoo.Kind, outputs: np.ndarray) -> float:
    expected = _predicted(kind, zoo.reference(kind))
    return float((_predicted(kind, outputs) == expected).mean())


def _weights(path: Path) -> int:
    """Float weight elements of a model (initializers and Constant nodes)."""
    model = onnx.load(path)
    sizes = [int(np.prod(t.dims)) for t in model.graph.initializer]
    sizes += [int(np.prod(a.t.dims)) for n in model.graph.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "value"]  # fmt: skip
    return sum(sizes)


@pytest.fixture(scope="module", params=list(zoo.KINDS))
def kind(request, tmp_path_factory):
    made = zoo.KINDS[request.param]()
    model, data = made.save(tmp_path_factory.mktemp(made.name))
    return made, model, data


def test_evaluate_reports_the_originals_accuracy(kind):
    made, model, data = kind
    result = _run(["evaluate", str(model), "--data", str(data), "--json", "--batch-size", "1",
                   *made.options])  # fmt: skip
    report = json.loads(result.stdout)
    assert report["metrics"]["accuracy"] == pytest.approx(zoo.accuracy(made, zoo.reference(made)))


def test_quantize_agrees_with_the_original(kind, tmp_path):
    made, model, data = kind
    out = tmp_path / "q8.onnx"
    _run(["quantize", str(model), "--data", str(data), "-o", str(out), *made.options])
    quantized = onnx.load(out)
    ops = {n.op_type for n in quantized.graph.node}
    assert "QuantizeLinear" in ops and "BatchNormalization" not in ops
    weights = {t.name for t in made.model.graph.initializer}
    for original in made.model.graph.input:  # every input kept, with its element type
        if original.name in weights:
            continue
        kept = next(i for i in quantized.graph.input if i.name == original.name)
        assert kept.type.tensor_type.elem_type == original.type.tensor_type.elem_type
    assert _agreement(made, _outputs(out, made)) >= AGREEMENT_8_BIT


def test_scale_keeps_the_interface_with_fewer_weights(kind, tmp_path):
    made, model, data = kind
    if made.scale_layer is None:
        pytest.skip(f"{made.name} has no channel group to scale")
    config = tmp_path / "width.toml"
    config.write_text(f"[layers.{made.scale_layer}]\nchannel_multiplier = 0.5\n")
    out = tmp_path / "scaled.onnx"
    _run(["scale", str(model), "--config", str(config), "--data", str(data), "-o", str(out),
          *made.options])  # fmt: skip
    outputs = _outputs(out, made)
    assert outputs.shape == zoo.reference(made).shape and np.isfinite(outputs).all()
    assert _weights(out) < _weights(model)
    # the refit keeps most of what the original predicts
    assert _agreement(made, outputs) >= 0.5


def test_search_exports_models_that_agree(kind, tmp_path):
    made, model, data = kind
    config = tmp_path / "search.toml"
    types = ["linear"] + (["conv"] if any(n.op_type == "Conv" for n in made.model.graph.node)
                          else [])  # fmt: skip
    widths = "".join(f"[search.quantization.by_type.{t}]\nweight_width = [4, 8]\n"
                     "data_in_width = [8]\n" for t in types)  # fmt: skip
    config.write_text(
        f'[model]\nonnx = "{model}"\n{made.model_toml}[data]\ndataset = "{data}"\n{widths}'
        '[search.strategy]\nsampler = "random"\nn_trials = 10\nseed = 0\n'
        "[search.evaluation]\nbatch_sizes = [1]\nrepeats = 3\nmin_time_s = 0\n"
    )
    run = tmp_path / "run"
    _run(["search", str(config), "--run-dir", str(run), "--no-progress"])
    exported = sorted((run / "pareto").glob("trial_*.onnx"))
    assert exported
    best = max(_agreement(made, _outputs(path, made)) for path in exported)
    assert best >= AGREEMENT_8_BIT


def test_a_batch_baked_into_a_reshape_is_one_line_naming_the_node(tmp_path):
    model, data = zoo.baked_batch().save(tmp_path)
    args = [str(model), "--data", str(data)]
    result = CliRunner().invoke(main, ["quantize", *args, "-o", str(tmp_path / "q.onnx")])
    assert result.exit_code == 2
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("error: ") and "'flatten_batch1'" in error
    assert "--batch-size-fixed" in error and "dynamic batch" in error
    assert not (tmp_path / "q.onnx").exists()
    kept = CliRunner().invoke(main, ["quantize", *args, "--batch-size-fixed", "-o",
                                     str(tmp_path / "q.onnx")])  # fmt: skip
    assert kept.exit_code == 0, kept.output
    batch = onnx.load(tmp_path / "q.onnx").graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_value == 1
