"""hls4ml projects: types from the model's formats, compiled emulation == onnxruntime exactly,
and the one-line refusals (float model, unsupported ops, width > 32, no g++, no extra)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxopt.cli import main
from onnxopt.config.fpga import Hls4mlOptions
from onnxopt.errors import ExportError
from onnxopt.exporters.user_model import Preparation, prepare_user_model
from onnxopt.fpga import hls_project
from onnxopt.fpga.qonnx_convert import to_qonnx
from tests.fpga.helpers import gemm_names, inputs, mixed_config, need_extra, plain_mlp, quantize

pytestmark = pytest.mark.usefixtures("fpga_extra")


@pytest.fixture(scope="module")
def fpga_extra():
    need_extra()


@pytest.fixture(scope="module")
def digits_qdq(exported_recipe, digits, tmp_path_factory):
    model = onnx.load(exported_recipe("digits-mlp"))
    folder = tmp_path_factory.mktemp("qdq")
    paths = {}
    configs = (("mixed", mixed_config(gemm_names(model))),
               # both 8-bit weight layouts on any machine: int8, and uint8 around 128 for
               # CPUs whose u8s8 products saturate
               ("8-bit-vnni", {"target_cpu": "avx512-vnni"}),
               ("8-bit-avx2", {"target_cpu": "avx2"}))  # fmt: skip
    for name, config in configs:
        paths[name] = folder / f"{name}.onnx"
        onnx.save(quantize(model, digits.calibration.x, config), paths[name])
    return paths


def export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def _needed_width(lo: int, hi: int) -> int:
    """Independent of onnxopt.fpga: bits of the signed range [lo, hi]."""
    width = 1
    while not (-(2 ** (width - 1)) <= lo and hi <= 2 ** (width - 1) - 1):
        width += 1
    return width


@pytest.mark.parametrize("variant", ["8-bit-vnni", "8-bit-avx2"])
def test_digits_8bit_project_is_typed_from_the_model(digits_qdq, tmp_path, variant):
    """No compile here: test_pipeline verifies digits-mlp at 8 bits and mixed."""
    out = tmp_path / "prj"
    result = export(digits_qdq[variant], "--format", "hls4ml", "-o", out)
    assert result.exit_code == 0, result.output
    assert "synthesis not run" in result.output and "compiled" not in result.output
    report = json.loads((out / "precision.json").read_text())
    assert "verify" not in report
    assert (out / "firmware" / "myproject.cpp").is_file()  # hls4ml's own writer
    # the input is converted to the first quantizer's format (u8, frac 7), rounding half
    # to even and saturating like QuantizeLinear; not hls4ml's default fixed<16,6>
    assert report["input"]["type"] == "ufixed<8,1,RND_CONV,SAT>"
    qdq = onnx.load(digits_qdq[variant])
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    dense = [row for row in report["layers"] if row["class"] == "Dense"]
    assert [row["onnx_node"] for row in dense] == gemm_names(qdq)
    for row, gemm in zip(dense, [n for n in qdq.graph.node if n.op_type == "Gemm"], strict=True):
        dq = next(n for n in qdq.graph.node if n.output[0] == gemm.input[1])
        zero = inits[dq.input[2]].astype(np.int64) if len(dq.input) > 2 else np.int64(0)
        # uint8 codes around 128 for a CPU whose u8s8 products saturate, int8 codes otherwise
        assert bool(np.any(zero == 128)) == (variant == "8-bit-avx2")
        w = (inits[dq.input[0]].astype(np.int64) - zero).T  # [in, out]; inputs are u8 codes
        lo = int(np.minimum(w * 0, w * 255).sum(axis=0).min())
        hi = int(np.maximum(w * 0, w * 255).sum(axis=0).max())
        width = int(row["types"]["accum"].split("<")[1].split(",")[0])
        assert width == _needed_width(lo, hi), row  # exact, and no wider than needed
        assert row["types"]["weight"].startswith("fixed<8,") and row["reuse_factor"] == 1
    assert report["resources"]["weight_bits"] == 8 * (64 * 64 + 64 * 32 + 32 * 10) + 16 * 106


@pytest.mark.slow
def test_mixed_widths_resource_strategy_io_stream(digits_qdq, digits, tmp_path):
    out = tmp_path / "prj"
    result = export(digits_qdq["mixed"], "--format", "hls4ml", "-o", out, "--data", "digits",
                    "--verify", "--strategy", "resource", "--reuse-factor", "16",
                    "--io-type", "io_stream")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "3600/3600 outputs exact (100.00%)" in result.output
    report = json.loads((out / "precision.json").read_text())
    assert (
        report["options"]["strategy"] == "resource" and report["options"]["io_type"] == "io_stream"
    )
    dense = [row for row in report["layers"] if row["class"] == "Dense"]
    assert {row["reuse_factor"] for row in dense} == {16}  # not config_from_onnx_model's 1
    weights = sorted(row["types"]["weight"] for row in dense)
    assert weights[0].startswith("fixed<2,")  # the true 2-bit weights
    proxy = report["resources"]
    assert proxy["multipliers_after_reuse"] < sum(proxy["multiplications_by_width"].values())


@pytest.mark.slow
def test_unnamed_signed_model_with_float_batchnorm(tmp_path):
    """A model we did not write: unnamed nodes, signed activations (uint8 + 128), and a float
    BatchNormalization on the raw input before the first quantizer (as in the JSC models)."""
    base = plain_mlp(relu_after=())
    rng = np.random.default_rng(3)
    params = [rng.uniform(0.5, 1.5, 12), rng.normal(0, 0.3, 12), rng.normal(0, 0.3, 12),
              rng.uniform(0.5, 2.0, 12)]  # fmt: skip
    names = ["bn_g", "bn_b", "bn_m", "bn_v"]
    base.graph.initializer.extend(
        numpy_helper.from_array(p.astype(np.float32), n) for p, n in zip(params, names, strict=True)
    )
    base.graph.node[0].input[0] = "bn_out"
    base.graph.node.insert(0, helper.make_node("BatchNormalization", ["x", *names], ["bn_out"]))
    # unfolded (the default preparation folds it into the first Gemm): hls4ml gets it as is
    model = prepare_user_model(base, "bn.onnx", Preparation(fold=False)).model
    x = inputs(2000, 12, seed=5)
    qdq = quantize(model, x)
    path = tmp_path / "bn.q.onnx"
    onnx.save(qdq, path)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(len(x)) % 4)
    out = tmp_path / "prj"
    result = export(path, "--format", "hls4ml", "-o", out, "--data", tmp_path / "data.npz",
                    "--verify")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "outputs exact (100.00%)" in result.output and "input float" in result.output
    report = json.loads((out / "precision.json").read_text())
    assert report["float_layers"] and "floating-point" in report["float_note"]


def _append(model: onnx.ModelProto, nodes, inits=(), out_shape=None) -> onnx.ModelProto:
    out = onnx.ModelProto.FromString(model.SerializeToString())
    old = out.graph.output[0].name
    out.graph.node[-1].output[0] = "pre"
    for node in out.graph.node:
        node.input[:] = ["pre" if i == old else i for i in node.input]
    nodes[0].input[0] = "pre"
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(inits)
    del out.graph.output[:]
    out.graph.output.append(helper.make_tensor_value_info(old, TensorProto.FLOAT, out_shape))
    return out


def _quantized_plain(tmp_path, tail=None, name="m.onnx", **kw):
    model = prepare_user_model(plain_mlp(dims=(12, 10, 8)), name).model
    if tail is not None:
        model = tail(model)
    qdq = quantize(model, inputs(200, 12), kw.get("config"))
    path = tmp_path / name
    onnx.save(qdq, path)
    return path


def softmax_4d(model):
    shape = numpy_helper.from_array(np.array([-1, 2, 2, 2], np.int64), "shape4")
    nodes = [helper.make_node("Reshape", ["pre", "shape4"], ["r4"], name="to4d"),
             helper.make_node("Softmax", ["r4"], ["y"], name="sm4", axis=-1)]  # fmt: skip
    return _append(model, nodes, [shape], ["N", 2, 2, 2])


def control_flow(model):
    branch = helper.make_graph(
        [helper.make_node("Identity", ["pre"], ["b"])], "branch", [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 8])],
    )  # fmt: skip
    cond = numpy_helper.from_array(np.array(True), "cond")
    node = helper.make_node("If", ["cond"], ["y"], name="branchy", then_branch=branch,
                            else_branch=branch)  # fmt: skip
    node.input[0] = "cond"
    out = _append(model, [helper.make_node("Identity", ["pre"], ["unused"])], [cond], ["N", 8])
    out.graph.node.pop()
    out.graph.node.append(node)
    return out


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (softmax_4d, "node 'sm4': Softmax over a 4-D tensor: hls4ml has no such layer"),
        (control_flow, "node 'branchy': control flow: hls4ml has no layer for it"),
    ],
)
def test_unsupported_ops_are_named(tmp_path, tail, message):
    path = _quantized_plain(tmp_path, tail)
    result = export(path, "--format", "hls4ml", "-o", tmp_path / "prj")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {message}"
    assert not (tmp_path / "prj").exists()


def test_float_model_and_wide_metadata_are_refused(tmp_path):
    plain = tmp_path / "float.onnx"
    onnx.save(plain_mlp(), plain)
    result = export(plain, "--format", "hls4ml", "-o", tmp_path / "a")
    assert result.exit_code == 2 and "it is a float model; quantize it first" in result.output
    qdq = onnx.load(_quantized_plain(tmp_path))
    entry = next(p for p in qdq.metadata_props if p.key == "onnxopt.bit_widths")
    widths = json.loads(entry.value)
    bias = next(name for name in widths if "bias" in name)
    entry.value = json.dumps({**widths, bias: 40})
    wide = tmp_path / "wide.onnx"
    onnx.save(qdq, wide)
    result = export(wide, "--format", "hls4ml", "-o", tmp_path / "b")
    assert result.exit_code == 2
    assert f"error: tensor '{bias}': width 40 bits is over 32" in result.output


def test_per_channel_weights_are_refused_for_hls4ml(tmp_path):
    config = {"granularity": "per_channel"}
    path = _quantized_plain(tmp_path, config=config)
    result = export(path, "--format", "hls4ml", "-o", tmp_path / "prj")
    assert result.exit_code == 2
    assert "per-channel fractions; hls4ml has one weight type per layer" in result.output


def test_missing_compiler_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setattr(hls_project.shutil, "which", lambda name: None)
    path = _quantized_plain(tmp_path)
    result = export(path, "--format", "hls4ml", "-o", tmp_path / "prj", "--verify")
    assert result.exit_code == 2
    assert "error: g++ is not installed" in result.output and "apt-get install g++" in result.output


def test_missing_extra_names_the_install_line(tmp_path, monkeypatch):
    from onnxopt.fpga import extra

    real = extra.importlib.util.find_spec
    monkeypatch.setattr(
        extra.importlib.util, "find_spec", lambda n, *a: None if n == "hls4ml" else real(n, *a)
    )
    path = _quantized_plain(tmp_path)
    result = export(path, "--format", "hls4ml", "-o", tmp_path / "prj")
    assert result.exit_code == 2
    assert "hls4ml is not installed" in result.output
    assert "pip install -e '.[fpga]'" in result.output


@pytest.mark.slow
def test_failed_compile_reports_the_compilers_first_error(tmp_path):
    qdq = onnx.load(_quantized_plain(tmp_path))
    project = hls_project.build_project(to_qonnx(qdq), tmp_path / "prj", Hls4mlOptions())
    # compile() writes the project again, then runs g++: break the source in between
    target = tmp_path / "prj" / "firmware" / "myproject.cpp"
    original = project.hls_model.write

    def write_broken():
        original()
        target.write_text("#include <missing_header_for_the_test.h>\n" + target.read_text())

    project.hls_model.write = write_broken
    with pytest.raises(ExportError) as info:
        hls_project.compile_project(project)
    assert "failed to compile" in str(info.value)
    assert "missing_header_for_the_test.h" in str(info.value) and "error" in str(info.value)
