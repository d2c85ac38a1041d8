"""Models that are broken, or made by other tools, through the CLI: one line, the right exit code.

Each case is the file a user might bring: cut short, from a newer or older toolchain, with
weights in Constant nodes or initializers listed as inputs, symbolic dimensions, control
flow, several inputs or outputs. Bad ones end with ``error: <problem>; <fix>`` on stderr and
exit 2; the ones onnxopt can work with succeed and say what was changed on stderr.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxopt.cli import main
from onnxopt.runtime.cpu import CPU_CLASSES

RNG = np.random.default_rng(0)
W1 = RNG.standard_normal((64, 16)).astype(np.float32) * 0.1
W2 = RNG.standard_normal((16, 10)).astype(np.float32) * 0.1


def _info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes, inputs, outputs, inits=(), opset=21) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def mlp(*, opset=21, x_shape=("N", 64), constant_weights=False) -> onnx.ModelProto:
    """x -> MatMul(w1) 'mm1' -> Relu -> Gemm(w2) 'fc2' -> y: 64 features, 10 classes."""
    w1, w2 = numpy_helper.from_array(W1, "w1"), numpy_helper.from_array(W2, "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2"),
    ]
    if constant_weights:  # as some exporters write them: Constant nodes, no initializers
        nodes[:0] = [helper.make_node("Constant", [], [t.name], value=t) for t in (w1, w2)]
    inits = () if constant_weights else (w1, w2)
    return _model(nodes, [_info("x", list(x_shape))], [_info("y", ["N", 10])], inits, opset)


def legacy_mlp() -> onnx.ModelProto:
    """IR version 3 / opset 8 as old converters wrote it: weights listed as graph inputs,
    Gemm with bias and transB, and the batch fixed to 1."""
    w1 = numpy_helper.from_array(W1.T.copy(), "w1")
    w2 = numpy_helper.from_array(W2.T.copy(), "w2")
    b1, b2 = (
        numpy_helper.from_array(np.zeros(n, np.float32), f"b{i}") for i, n in ((1, 16), (2, 10))
    )
    inits = [w1, b1, w2, b2]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1, name="fc2"),
    ]
    inputs = [_info("x", [1, 64])] + [_info(t.name, list(t.dims)) for t in inits]
    model = _model(nodes, inputs, [_info("y", [1, 10])], inits, opset=8)
    model.ir_version = 3
    return model


def if_model() -> onnx.ModelProto:
    """An MLP with an If between its layers: the If stays float, the layers are quantized."""
    model = mlp()
    branch = [
        helper.make_graph([helper.make_node(op, ["r"], [out])], out, [], [_info(out, ["N", 16])])
        for op, out in (("Identity", "t"), ("Neg", "e"))
    ]
    fc2 = model.graph.node.pop()
    model.graph.node.extend(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="total"),
            helper.make_node("Greater", ["s", "zero"], ["c"], name="positive"),
            helper.make_node(
                "If", ["c"], ["z"], then_branch=branch[0], else_branch=branch[1], name="branch"
            ),
            helper.make_node("Gemm", ["z", "w2"], ["y"], name="fc2"),
        ]
    )
    model.graph.initializer.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
    assert fc2.name == "fc2"
    return model


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    """``cli(*args)``: runs onnxopt in tmp_path, returns (exit code, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exception is None or isinstance(result.exception, SystemExit)
        return result.exit_code, result.stdout, result.stderr

    return run


@pytest.fixture()
def save(tmp_path):
    def write(model: onnx.ModelProto, name: str = "m.onnx") -> str:
        onnx.save_model(model, str(tmp_path / name))
        return name

    return write


def assert_error(outcome, code: int, *fragments: str) -> str:
    """One ``error:`` line on stderr with every fragment, the exit code, no traceback."""
    exit_code, out, err = outcome
    assert exit_code == code, err
    line = err.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in line, line
    return line


def _quantize_json(cli, model: str, *args):
    exit_code, out, err = cli("quantize", model, "-o", "q.onnx", "--json", *args)
    assert exit_code == 0, err
    return json.loads(out), err


# -- broken files ---------------------------------------------------------------------------


def test_truncated_file(cli, tmp_path):
    data = mlp().SerializeToString()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    assert_error(
        cli("quantize", "cut.onnx", "-o", "q.onnx"),
        2,
        "cut.onnx is truncated or corrupt",
        "re-export or re-download",
    )


def test_file_cut_at_a_field_boundary_still_parses_but_is_refused(cli, tmp_path):
    full = mlp()
    head = onnx.ModelProto()
    head.CopyFrom(full)
    del head.opset_import[:]  # opset_import is written after the graph: a prefix of the file
    cut = head.SerializeToString()
    assert full.SerializeToString().startswith(cut)
    (tmp_path / "cut.onnx").write_bytes(cut)
    assert_error(cli("evaluate", "cut.onnx"), 2, "declares no opset", "re-export or re-download")


def test_missing_weight_is_an_incomplete_model(cli, save):
    model = mlp()
    del model.graph.initializer[1]
    assert_error(
        cli("quantize", save(model), "-o", "q.onnx"),
        2,
        "node 'fc2' reads 'w2', which no node, initializer or input defines",
    )


@pytest.mark.parametrize("command", ["quantize", "evaluate"])
def test_ir_version_newer_than_installed(cli, save, command):
    model = mlp()
    model.ir_version = onnx.IR_VERSION + 1
    args = ["-o", "q.onnx"] if command == "quantize" else []
    assert_error(
        cli(command, save(model), *args),
        2,
        f"has IR version {onnx.IR_VERSION + 1}",
        f"read up to IR version {onnx.IR_VERSION}",
        "re-export with an older exporter",
        "upgrade",
    )


def test_opset_newer_than_installed(cli, save):
    newest = onnx.defs.onnx_opset_version()
    assert_error(
        cli("evaluate", save(mlp(opset=newest + 1))),
        2,
        f"uses opset {newest + 1}",
        f"support up to opset {newest}",
        "re-export at opset 21",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: setattr(m, "ir_version", 15), "has IR version 15 but onnxruntime"),
        (lambda m: m.opset_import[0].__setattr__("version", 29), "uses opset 29 but onnxruntime"),
    ],
)
def test_onnxruntime_version_refusal_in_memory_is_one_line(change, message):
    # a model built in memory never passes load_onnx's check: onnxruntime's own refusal is
    # recognized and turned into the same kind of line
    from onnxopt.errors import ModelLoadError
    from onnxopt.runtime.ort import make_session

    model = mlp()
    change(model)
    with pytest.raises(ModelLoadError, match=message) as info:
        make_session(model)
    assert "\n" not in str(info.value) and "upgrade onnxruntime" in str(info.value)


# -- older opsets and other exporters' habits ------------------------------------------------


def test_old_opset_is_converted_and_said_so(cli, save):
    report, err = _quantize_json(cli, save(mlp(opset=11)))
    assert "note: m.onnx: converted from opset 11 to 21" in err
    assert report["quantized"] == ["mm1", "fc2"]
    assert onnx.load("q.onnx").opset_import[0].version == 21


def test_opset_the_converter_cannot_raise(cli, save):
    scaler = helper.make_node("ImageScaler", ["x"], ["y"], scale=2.0, name="scale")  # Caffe2 era
    model = _model([scaler], [_info("x", ["N", 1, 8, 8])], [_info("y", ["N", 1, 8, 8])], opset=6)
    assert_error(
        cli("quantize", save(model), "-o", "q.onnx"),
        2,
        "cannot take opset 6 to 21",
        "op 'ImageScaler' is not (or no longer) part of ONNX",
        "re-export the model at opset 21",
    )


def test_constant_node_weights_are_quantized_and_scaled(cli, save, tmp_path):
    name = save(mlp(constant_weights=True))
    report, err = _quantize_json(cli, name)
    assert report["quantized"] == ["mm1", "fc2"]
    assert report["expected_kernels"] == {"mm1": "QLinearMatMul", "fc2": "QGemm"}
    assert "2 Constant-node tensor(s) moved to initializers" in err
    quantized = onnx.load("q.onnx")
    assert not [n for n in quantized.graph.node if n.op_type == "Constant"]
    # 8-bit weights: int8, or uint8 around 128 on a CPU whose u8s8 kernels saturate
    u8s8_exact = CPU_CLASSES[report["target_cpu"]].u8s8_exact
    weight_type = TensorProto.INT8 if u8s8_exact else TensorProto.UINT8
    assert {t.data_type for t in quantized.graph.initializer if t.dims} == {weight_type}
    (tmp_path / "w.toml").write_text('refit = "none"\n[layers.mm1]\nchannel_multiplier = 0.5\n')
    exit_code, out, err = cli("scale", name, "--config", "w.toml", "-o", "s.onnx")
    assert exit_code == 0, err
    assert "group 'h': 16 -> 8 channels" in out


def test_legacy_ir3_model_with_weights_as_inputs_and_batch_1(cli, save):
    report, err = _quantize_json(cli, save(legacy_mlp()))
    assert "4 initializer(s) were also graph inputs" in err
    assert "converted from opset 8 to 21" in err
    assert report["quantized"] == ["fc1", "fc2"]
    exit_code, out, err = cli("evaluate", "q.onnx", "--no-latency", "--json")
    assert exit_code == 0, err
    assert json.loads(out)["n_samples"] == 360


# -- shapes, inputs and outputs --------------------------------------------------------------


def test_symbolic_feature_dim_takes_the_data_shape_or_is_refused_without_data(cli, save):
    name = save(mlp(x_shape=("N", "F")))
    report, _ = _quantize_json(cli, name)
    assert report["quantized"] == ["mm1", "fc2"]
    assert_error(
        cli("export", name, "-o", "p.onnx"),
        2,
        "input 'x' has dynamic dimension 'F' (axis 1)",
        "--input-shape x=1,<F>",
    )
    exit_code, _, err = cli("export", name, "-o", "p.onnx", "--input-shape", "x=?,64")
    assert exit_code == 0, err
    assert "input shapes fixed to x=[?, 64]" in err
    shape = onnx.load("p.onnx").graph.input[0].type.tensor_type.shape
    assert [d.dim_param or d.dim_value for d in shape.dim] == ["N", 64]
    exit_code, _, err = cli("export", name, "-o", "s.onnx", "--input-shape", "x=1,64")
    assert exit_code == 0 and "batch axis freed" not in err, err  # a batch given stays
    shape = onnx.load("s.onnx").graph.input[0].type.tensor_type.shape
    assert [d.dim_param or d.dim_value for d in shape.dim] == [1, 64]


def test_symbolic_image_dims_need_data_shaped_like_the_input(cli, save, tmp_path, digits):
    conv = [
        helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w"], ["y"], name="fc"),
    ]
    inits = [
        numpy_helper.from_array(RNG.standard_normal(s).astype(np.float32), n)
        for n, s in (("wc", (4, 1, 3, 3)), ("w", (4, 10)))
    ]
    name = save(_model(conv, [_info("x", ["N", 1, "H", "W"])], [_info("y", ["N", 10])], inits))
    assert_error(
        cli("quantize", name, "-o", "q.onnx"),
        2,
        "dataset samples have shape [64]",
        "symbolic dimensions 'H' (axis 2), 'W' (axis 3)",
        "give data shaped like the model input, or re-export the model with static dimensions",
    )
    split = digits.train
    np.savez(tmp_path / "img.npz", x=split.x.reshape(-1, 1, 8, 8), y=split.y)
    report, _ = _quantize_json(cli, name, "--data", "img.npz")
    assert report["quantized"] == ["conv", "fc"]


def test_control_flow_stays_float_and_is_listed(cli, save):
    report, _ = _quantize_json(cli, save(if_model()))
    assert report["quantized"] == ["mm1", "fc2"]
    assert report["float_nodes"]["branch"].startswith("If (control flow)")
    exit_code, out, err = cli("quantize", "m.onnx", "-o", "q.onnx")
    assert exit_code == 0, err
    assert "left in float: branch: If (control flow)" in out


def _two_input_mlp() -> onnx.ModelProto:
    model = mlp()
    model.graph.input.append(_info("mask", ["N", 64]))
    model.graph.node[0].input[0] = "xm"
    model.graph.node.insert(0, helper.make_node("Mul", ["x", "mask"], ["xm"]))
    return model


@pytest.mark.parametrize("command", ["quantize", "evaluate"])
def test_an_input_the_data_do_not_give_is_named_with_both_fixes(cli, save, command):
    args = ["-o", "q.onnx"] if command == "quantize" else []
    assert_error(
        cli(command, save(_two_input_mlp()), *args),
        2,
        "2 inputs to feed ('x', 'mask')",
        "np.savez(path, x=..., mask=..., y=...)",
        "[model.inputs.mask] value = ...",
        "--input-value mask=...",
    )


@pytest.mark.parametrize("command", ["quantize", "evaluate"])
def test_a_second_input_fixed_on_the_command_line_is_fed(cli, save, tmp_path, command):
    model = save(_two_input_mlp())
    args = ["-o", "q.onnx", "--json"] if command == "quantize" else ["--no-latency", "--json"]
    exit_code, out, err = cli(command, model, "--input-value", "mask=1.0", *args)
    assert exit_code == 0, err
    if command == "evaluate":  # the mask of ones leaves the model the plain MLP
        fed = json.loads(out)["accuracy"]
        save(mlp(), "plain.onnx")
        exit_code, out, err = cli("evaluate", "plain.onnx", "--no-latency", "--json")
        assert json.loads(out)["accuracy"] == fed
    else:
        assert json.loads(out)["quantized"] == ["mm1", "fc2"]


def test_integer_input_takes_integer_data_and_stays_unquantized(cli, save, tmp_path):
    model = mlp()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    model.graph.node[0].input[0] = "xf"
    model.graph.node.insert(0, helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
    name = save(model)
    np.savez(tmp_path / "frac.npz", x=RNG.random((40, 64)), y=np.arange(40) % 10)
    assert_error(
        cli("evaluate", name, "--data", "frac.npz"),
        2,
        "model input 'x' takes tensor(int64)",
        "non-integer values",
    )
    np.savez(tmp_path / "ids.npz", x=RNG.integers(0, 16, (40, 64)), y=np.arange(40) % 10)
    report, _ = _quantize_json(cli, name, "--data", "ids.npz")
    assert report["quantized"] == ["mm1", "fc2"]
    quantized = onnx.load(str(tmp_path / "q.onnx"))
    assert quantized.graph.input[0].type.tensor_type.elem_type == TensorProto.INT64


def test_classifier_output_is_the_one_with_as_many_classes(cli, save):
    model = mlp()
    model.graph.output.insert(0, _info("r", ["N", 16]))  # hidden features first
    exit_code, out, err = cli("evaluate", save(model), "--no-latency", "--json")
    assert exit_code == 0, err
    assert json.loads(out)["output_name"] == "y"


def test_ambiguous_outputs_ask_for_output_name(cli, save):
    model = mlp()
    model.graph.node.append(helper.make_node("Softmax", ["y"], ["p"], name="softmax"))
    model.graph.output.append(_info("p", ["N", 10]))
    name = save(model)
    assert_error(
        cli("evaluate", name, "--no-latency"),
        2,
        "2 of the model's outputs ('y' ['N', 10], 'p' ['N', 10]) end in 10 classes",
        "--output-name",
    )
    exit_code, out, err = cli("evaluate", name, "--no-latency", "--json", "--output-name", "p")
    assert exit_code == 0, err
    report = json.loads(out)
    assert report["output_name"] == "p" and report["output_kind"] == "probabilities"
    assert_error(
        cli("evaluate", name, "--no-latency", "--output-name", "prob"), 2, "no output named 'prob'"
    )
