"""BatchNorm folded into the Gemm/MatMul that follows it: rule by rule, then through export."""

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from onnxopt.cli import main
from onnxopt.exporters.prepare import prepare_model
from onnxopt.exporters.torch_onnx import ATOL, RTOL, export_module

C, M = 4, 3
RNG = np.random.default_rng(0)
GAMMA = RNG.uniform(0.5, 1.5, C).astype(np.float32)
BETA = RNG.uniform(-1, 1, C).astype(np.float32)
MEAN = RNG.uniform(-1, 1, C).astype(np.float32)
VAR = RNG.uniform(0.5, 2, C).astype(np.float32)
EPS = 1e-3
W_KN = RNG.standard_normal((C, M)).astype(np.float32)  # [K, N] as MatMul and transB=0 take it
BIAS = RNG.standard_normal(M).astype(np.float32)


def _floats(a: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in a.ravel())


def _model(body: str, extra_inits: str = "", x_shape: str = f"N, {C}", out: str = "N, 3"):
    """x -> BatchNormalization -> ``body`` (which reads ``z``) -> y, as ONNX text."""
    text = f"""
    <ir_version: 10, opset_import: ["" : 21]>
    g (float[{x_shape}] x) => (float[{out}] y)
    <float[{C}] gamma = {{{_floats(GAMMA)}}}, float[{C}] beta = {{{_floats(BETA)}}},
     float[{C}] mean = {{{_floats(MEAN)}}}, float[{C}] var = {{{_floats(VAR)}}}{extra_inits}>
    {{
        z = BatchNormalization <epsilon: float = {EPS}> (x, gamma, beta, mean, var)
        {body}
    }}"""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


def _init(name: str, a: np.ndarray) -> str:
    dims = ", ".join(str(d) for d in a.shape)
    return f", float[{dims}] {name} = {{{_floats(a)}}}"


def _bn(x: np.ndarray) -> np.ndarray:
    """The independent reference: inference BatchNorm over axis 1, in float64."""
    shape = (1, C) + (1,) * (x.ndim - 2)
    scale = (GAMMA / np.sqrt(VAR.astype(np.float64) + EPS)).reshape(shape)
    return (x - MEAN.reshape(shape)) * scale + BETA.reshape(shape)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _prepared(model: onnx.ModelProto):
    result = prepare_model(model)
    onnx.checker.check_model(result.model, full_check=True)
    onnx.shape_inference.infer_shapes(result.model, check_type=True, strict_mode=True)
    return result, [n.op_type for n in result.model.graph.node]


X = RNG.standard_normal((6, C)).astype(np.float32)

GEMM_CASES = {
    "transB=1, bias": (
        "y = Gemm <transB: int = 1> (z, w, b)",
        _init("w", W_KN.T) + _init("b", BIAS),
        lambda z: z @ W_KN + BIAS,
    ),
    "transB=0, no bias": ("y = Gemm (z, w)", _init("w", W_KN), lambda z: z @ W_KN),
    "alpha, beta, broadcast bias": (
        "y = Gemm <alpha: float = 0.5, beta: float = 2.0> (z, w, b)",
        _init("w", W_KN) + _init("b", BIAS[None, :]),
        lambda z: 0.5 * (z @ W_KN) + 2.0 * BIAS,
    ),
}


@pytest.mark.parametrize("case", sorted(GEMM_CASES))
def test_batchnorm_folds_into_the_following_gemm(case):
    body, inits, reference = GEMM_CASES[case]
    result, ops = _prepared(_model(body, inits))
    assert (result.batchnorms_folded, result.batchnorms_left) == (1, 0)
    assert ops == ["Gemm"]
    np.testing.assert_allclose(_run(result.model, X), reference(_bn(X)), rtol=1e-5, atol=1e-5)


MATMUL_CASES = {
    "MatMul + Add": ("p = MatMul (z, w)\n y = Add (p, b)", lambda z: z @ W_KN + BIAS),
    "Add with the bias first": ("p = MatMul (z, w)\n y = Add (b, p)", lambda z: BIAS + z @ W_KN),
    "MatMul alone": ("y = MatMul (z, w)", lambda z: z @ W_KN),
}


@pytest.mark.parametrize("case", sorted(MATMUL_CASES))
def test_batchnorm_folds_into_the_following_matmul(case):
    body, reference = MATMUL_CASES[case]
    result, ops = _prepared(_model(body, _init("w", W_KN) + _init("b", BIAS)))
    assert (result.batchnorms_folded, result.batchnorms_left) == (1, 0)
    assert ops == ["MatMul", "Add"]  # the shift becomes (or joins) the bias
    np.testing.assert_allclose(_run(result.model, X), reference(_bn(X)), rtol=1e-5, atol=1e-5)


def test_batchnorm_after_relu_between_two_layers_folds_forward():
    """Gemm -> Relu -> BN -> Gemm: the intermediate value's shape comes from inference."""
    w1 = RNG.standard_normal((C, C)).astype(np.float32)
    body = """h = Relu (z)
        u = Gemm (h, w1)
        r = Relu (u)
        v = BatchNormalization (r, gamma, beta, mean, var)
        y = Gemm (v, w)"""
    model = _model(body, _init("w1", w1) + _init("w", W_KN))
    result, ops = _prepared(model)
    assert (result.batchnorms_folded, result.batchnorms_left) == (1, 1)  # the first is before Relu
    assert ops == ["BatchNormalization", "Relu", "Gemm", "Relu", "Gemm"]
    scale = GAMMA / np.sqrt(VAR.astype(np.float64) + 1e-5)  # the second BN: default epsilon
    second = (np.maximum(np.maximum(_bn(X), 0) @ w1, 0) - MEAN) * scale + BETA
    np.testing.assert_allclose(_run(result.model, X), second @ W_KN, rtol=1e-5, atol=1e-5)


NOT_FOLDED = {
    "a Relu in between": ("r = Relu (z)\n y = Gemm (r, w)", _init("w", W_KN), f"N, {C}", "N, 3"),
    "two consumers": (
        "a = Gemm (z, w)\n c = Gemm (z, w2)\n y = Add (a, c)",
        _init("w", W_KN) + _init("w2", W_KN * 2),
        f"N, {C}",
        "N, 3",
    ),
    "rank 3: MatMul contracts the last axis, BN scales axis 1": (
        "y = MatMul (z, w)",
        _init("w", RNG.standard_normal((C, M)).astype(np.float32)),
        f"N, {C}, {C}",
        f"N, {C}, 3",
    ),
    "a following Conv (its zero padding would see the shift)": (
        "y = Conv <pads: ints = [1, 1, 1, 1]> (z, w)",
        _init("w", RNG.standard_normal((M, C, 3, 3)).astype(np.float32)),
        f"N, {C}, 5, 5",
        "N, 3, 5, 5",
    ),
    "a weight shared with another layer": (
        "a = Gemm (z, w)\n c = Gemm (x, w)\n y = Add (a, c)",
        _init("w", W_KN),
        f"N, {C}",
        "N, 3",
    ),
}


@pytest.mark.parametrize("case", sorted(NOT_FOLDED))
def test_batchnorm_stays_where_folding_is_not_exact(case):
    body, inits, x_shape, out = NOT_FOLDED[case]
    model = _model(body, inits, x_shape, out)
    result, ops = _prepared(model)
    assert (result.batchnorms_folded, result.batchnorms_left) == (0, 1)
    assert ops.count("BatchNormalization") == 1
    shape = [d.dim_value or 2 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = RNG.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(_run(result.model, x), _run(model, x), rtol=1e-5, atol=1e-5)


def _randomize(module: nn.Module) -> nn.Module:
    for m in module.modules():  # non-trivial statistics so the fold is really tested
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-1, 1)
    return module.eval()


def bn_first():
    torch.manual_seed(0)
    return _randomize(
        nn.Sequential(nn.BatchNorm1d(16), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5))
    )


def bn_middle():
    torch.manual_seed(0)
    return _randomize(
        nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 5))
    )


@pytest.mark.parametrize("factory", [bn_first, bn_middle])
def test_torch_batchnorm_before_a_linear_is_folded_on_export(factory, tmp_path):
    module = factory()
    res = export_module(module, (16,), tmp_path / "m.onnx")
    model = onnx.load(str(res.path))
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 0
    assert (res.batchnorms_folded, res.batchnorms_left) == (1, 0)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm"]
    for batch in (1, 5, 33):
        x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(_run(model, x), expected, rtol=RTOL, atol=ATOL)


FACTORY = """
import torch
from torch import nn

def make():
    torch.manual_seed(0)
    module = nn.Sequential(nn.BatchNorm1d(16), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 5))
    module[0].running_mean.uniform_(-1, 1)
    module[0].running_var.uniform_(0.5, 2)
    return module
"""


def test_export_message_counts_the_batchnorm_folded_forward(tmp_path, monkeypatch):
    (tmp_path / "bn_factories.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(
        main, ["export", "--factory", "bn_factories:make", "--input-shape", "16", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "1 BatchNorm folded, 0 left" in result.output
