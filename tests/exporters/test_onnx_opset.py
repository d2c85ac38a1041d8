"""--opset on an ONNX file means what it means for a torch module; conversions are checked."""

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from onnxopt.cli import main
from onnxopt.errors import ModelLoadError, UsageError
from onnxopt.exporters.onnx_input import prepare_onnx_file
from onnxopt.exporters.user_model import Preparation, prepare_user_model

RNG = np.random.default_rng(0)
W = RNG.standard_normal((8, 3)).astype(np.float32)


def _mlp(opset: int, activation: str = "Relu") -> onnx.ModelProto:
    weights = ", ".join(repr(float(v)) for v in W.ravel())
    return onnx.parser.parse_model(
        f"""
        <ir_version: 8, opset_import: ["" : {opset}]>
        g (float[N, 8] x) => (float[N, 3] y)
        <float[8, 3] w = {{{weights}}}>
        {{
            h = {activation} (x)
            y = MatMul (h, w)
        }}"""
    )


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain == "")


@pytest.mark.parametrize("opset", [5, 17, 29, 40])
def test_opset_outside_the_torch_range_is_a_usage_error(opset, tmp_path):
    onnx.save(_mlp(21), str(tmp_path / "m.onnx"))
    with pytest.raises(UsageError) as info:
        prepare_onnx_file(tmp_path / "m.onnx", tmp_path / "out.onnx", opset=opset)
    assert str(info.value) == (
        f"opset {opset} is not supported; use 18..{onnx.defs.onnx_opset_version()}"
        " (default 21, the newest with fused QDQ kernels)"
    )
    assert info.value.exit_code == 2 and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("opset", [18, 19, 20])
def test_lower_opset_is_converted_down_and_checked(opset, tmp_path):
    model = _mlp(21)
    onnx.save(model, str(tmp_path / "m.onnx"))
    res = prepare_onnx_file(tmp_path / "m.onnx", tmp_path / "out.onnx", opset=opset)
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert (res.opset_before, res.opset, _opset(out)) == (21, opset, opset)
    onnx.checker.check_model(out, full_check=True)
    x = RNG.standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(out, x), np.maximum(x, 0) @ W, rtol=1e-5, atol=1e-5)


def test_lower_opset_the_converter_cannot_reach_names_both(tmp_path):
    onnx.save(_mlp(21, "Gelu"), str(tmp_path / "m.onnx"))  # Gelu exists since opset 20
    with pytest.raises(ModelLoadError) as info:
        prepare_onnx_file(tmp_path / "m.onnx", tmp_path / "out.onnx", opset=19)
    text = str(info.value)
    assert "cannot take opset 21 to 19 (No Previous Version of Gelu exists)" in text
    assert "keep opset 21 (--opset 21)" in text and "\n" not in text
    assert info.value.exit_code == 2


def test_cli_opset_on_an_onnx_file(tmp_path):
    onnx.save(_mlp(21), str(tmp_path / "m.onnx"))
    runner = CliRunner()
    out = tmp_path / "out.onnx"
    result = runner.invoke(main, ["export", str(tmp_path / "m.onnx"), "--opset", "19", "-o", out])
    assert result.exit_code == 0, result.output
    assert "opset 21 -> 19" in result.output and _opset(onnx.load(str(out))) == 19
    result = runner.invoke(main, ["export", str(tmp_path / "m.onnx"), "--opset", "5", "-o", out])
    assert result.exit_code == 2
    newest = onnx.defs.onnx_opset_version()
    message = f"opset 5 is not supported; use 18..{newest} (default 21, the newest with fused"
    assert result.output.strip().splitlines() == [f"error: {message} QDQ kernels)"]


def test_quantize_and_scale_keep_minimum_semantics():
    """The shared preparation only raises the opset unless asked to lower it."""
    prepared = prepare_user_model(_mlp(22), "m.onnx", Preparation(opset=21))
    assert _opset(prepared.model) == 22 and not [n for n in prepared.notes if "opset" in n]


def _wrong_adapter(real):
    """A version converter whose adapter changes the weights: what the check must catch."""

    def convert(model, opset):
        converted = real(model, opset)
        weights = onnx.numpy_helper.to_array(converted.graph.initializer[0]) * 1.01
        converted.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(weights, "w"))
        return converted

    return convert


def test_conversion_that_changes_outputs_is_refused(monkeypatch):
    real = onnx.version_converter.convert_version
    monkeypatch.setattr(onnx.version_converter, "convert_version", _wrong_adapter(real))
    with pytest.raises(ModelLoadError) as info:
        prepare_user_model(_mlp(11), "m.onnx", Preparation(opset=21))
    text = str(info.value)
    assert text.startswith("m.onnx: converting from opset 11 to 21 changes output 'y' (max |diff|")
    assert "re-export the model at opset 21" in text and "\n" not in text


def test_correct_conversion_is_checked_and_noted():
    prepared = prepare_user_model(_mlp(11), "m.onnx", Preparation(opset=21))
    assert prepared.notes[-1] == "m.onnx: converted from opset 11 to 21 (onnx version converter)"
    assert _opset(prepared.model) == 21


def test_conversion_left_unchecked_says_why():
    model = _mlp(11)
    model.graph.input[0].type.tensor_type.ClearField("shape")
    prepared = prepare_user_model(model, "m.onnx", Preparation(opset=21))
    note = "m.onnx: converted from opset 11 to 21 (onnx version converter); outputs not compared"
    assert prepared.notes[-1] == f"{note}: an input has no shape"


def test_quantize_refuses_a_conversion_that_changes_outputs(tmp_path, monkeypatch):
    """Every command that loads a user's model gets the check, not only export."""
    real = onnx.version_converter.convert_version
    monkeypatch.setattr(onnx.version_converter, "convert_version", _wrong_adapter(real))
    onnx.save(_mlp(11), str(tmp_path / "m.onnx"))
    x = RNG.standard_normal((40, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 3)
    result = CliRunner().invoke(
        main,
        ["quantize", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz")]
        + ["-o", str(tmp_path / "q.onnx")],
    )
    assert result.exit_code == 2, result.output
    assert "converting from opset 11 to 21 changes output 'y'" in result.output
    assert not (tmp_path / "q.onnx").exists()
