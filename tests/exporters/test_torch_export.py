import io

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from onnxopt.errors import ExportError, UsageError
from onnxopt.exporters.prepare import prepare_model
from onnxopt.exporters.torch_onnx import export_module
from onnxopt.models.recipes import RECIPES


def _run(path_or_model, x):
    data = (
        path_or_model.SerializeToString()
        if isinstance(path_or_model, onnx.ModelProto)
        else str(path_or_model)
    )
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


# the encoder has named int64 inputs: onnxopt.exporters.torch_named (tests/models)
@pytest.mark.parametrize("name", sorted(n for n in RECIPES if RECIPES[n].task != "embedding"))
def test_every_recipe_exports_with_dynamic_batch_and_parity(name, tmp_path):
    recipe = RECIPES[name]
    features, classes = (64, 10) if name.startswith("digits") else (16, 5)
    torch.manual_seed(0)
    module = recipe.build(features, classes).eval()
    for m in module.modules():  # non-trivial BatchNorm statistics so folding is really tested
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
    shape = (1, 8, 8) if recipe.image_input else (features,)
    res = export_module(module, shape, tmp_path / "m.onnx")
    assert res.exporter == "dynamo" and res.fallback_reason is None
    model = onnx.load(str(res.path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 21
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert all(init.data_location != onnx.TensorProto.EXTERNAL for init in model.graph.initializer)
    # BatchNorm after Linear/Conv is folded; only BN on the raw input (before ReLU) remains
    assert res.batchnorms_left == (1 if name.startswith("jsc") else 0)
    bn_ops = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert bn_ops == res.batchnorms_left
    for batch in (1, 5, 33):
        x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_run(res.path, x), expected, rtol=1e-4, atol=1e-5)


class _DataDependent(nn.Module):
    """A branch on a tensor value: torch.export refuses it, TorchScript tracing takes one path."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.sum() > -1e9:
            return self.fc(x)
        return -self.fc(x)


def test_falls_back_to_torchscript_and_says_why(tmp_path, capfd):
    res = export_module(_DataDependent().eval(), (4,), tmp_path / "m.onnx")
    assert res.exporter == "torchscript"
    reason = res.fallback_reason
    assert reason and len(reason.splitlines()) == 1 and len(reason) <= 300
    # the real cause, not torch's "Failed to export ... step 1/3 ... Next steps:" boilerplate
    assert reason.startswith(
        "GuardOnDataDependentSymNode: Could not guard on data-dependent expression"
    )
    assert "step 1/3" not in reason and "Next steps" not in reason
    assert "(at test_torch_export.py:" in reason and reason.endswith(": if x.sum() > -1e9:)")
    assert onnx.load(str(res.path)).opset_import[0].version == 21  # converted from 20
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # torch's graph dumps and log lines stay off the terminal


class _Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) + torch.rand_like(self.fc(x))


def test_export_rejected_when_onnxruntime_disagrees_with_torch(tmp_path):
    with pytest.raises(ExportError, match="differs from torch"):
        export_module(_Noisy().eval(), (4,), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_bad_opset_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="opset 12"):
        export_module(nn.Linear(4, 3), (4,), tmp_path / "m.onnx", opset=12)


def test_prepare_folds_batchnorm_left_by_the_torchscript_exporter():
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).eval()
    module[1].running_mean.uniform_(-1, 1)
    module[1].running_var.uniform_(0.5, 2)
    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        (torch.randn(2, 6),),
        buffer,
        dynamo=False,
        opset_version=21,
        input_names=["x"],
        dynamic_axes={"x": {0: "b"}},
    )
    raw = onnx.load_from_string(buffer.getvalue())
    assert sum(n.op_type == "BatchNormalization" for n in raw.graph.node) == 1
    before = raw.SerializeToString()
    result = prepare_model(raw)
    assert raw.SerializeToString() == before  # the caller's model is untouched
    assert result.batchnorms_folded == 1 and result.batchnorms_left == 0
    assert [n.op_type for n in result.model.graph.node] == ["Gemm", "Relu", "Gemm"]
    x = np.random.default_rng(0).standard_normal((9, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(result.model, x), _run(raw, x), rtol=1e-5, atol=1e-6)
