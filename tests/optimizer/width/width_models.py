"""Tiny inline models for width scaling, checks, and an independent numpy interpreter."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 21
RTOL = ATOL = 1e-5
RECIPE_SHAPES = {
    "jsc-three-linear-layers": (16, 5, (16,)),
    "digits-cnn": (64, 10, (1, 8, 8)),
}
"""Recipe -> (in_features, classes, per-sample input shape) for exporting real recipes: the
lab's JSC shape (16 features, 5 classes) and digits-cnn on 8x8 digits."""


class Net:
    """Collects nodes and initializers of a tiny graph with seeded random weights."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def rand(self, name: str, shape, scale: float = 0.5) -> str:
        return self.const(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.count += 1
        name = name or f"{op_type.lower()}{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [name + "_out"], name, **attrs))
        return name + "_out"

    def gemm(self, x: str, n_in: int, n_out: int, name: str, trans_b: int = 1, bias=True) -> str:
        shape = (n_out, n_in) if trans_b else (n_in, n_out)
        inputs = [x, self.rand(f"{name}.w", shape, 1 / np.sqrt(n_in))]
        if bias:
            inputs.append(self.rand(f"{name}.b", (n_out,), 0.1))
        return self.op("Gemm", inputs, name, transB=trans_b)

    def batchnorm(self, x: str, c: int, name: str) -> str:
        r = self.rng
        params = [
            self.const(f"{name}.scale", r.uniform(0.5, 1.5, c).astype(np.float32)),
            self.const(f"{name}.bias", r.normal(0, 0.2, c).astype(np.float32)),
            self.const(f"{name}.mean", r.normal(0, 0.2, c).astype(np.float32)),
            self.const(f"{name}.var", r.uniform(0.5, 2.0, c).astype(np.float32)),
        ]
        return self.op("BatchNormalization", [x, *params], name, epsilon=1e-5)

    def conv(self, x: str, c_in: int, c_out: int, name: str, k: int = 3, group: int = 1) -> str:
        w = self.rand(f"{name}.w", (c_out, c_in // group, k, k), 1 / np.sqrt(c_in * k * k))
        b = self.rand(f"{name}.b", (c_out,), 0.1)
        return self.op("Conv", [x, w, b], name, pads=[k // 2] * 4, group=group)

    def model(self, x_shape, out: str, out_shape, opset: int = OPSET) -> onnx.ModelProto:
        self.nodes.append(helper.make_node("Identity", [out], ["y"], "output"))
        graph = helper.make_graph(
            self.nodes,
            "tiny",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 10
        onnx.checker.check_model(model, full_check=True)
        return model


def gemm_chain(
    widths, *, seed=0, trans_b=(1,), bn=False, relu=True, input_bn=False, out_relu=False
) -> onnx.ModelProto:
    """Gemm layers ``fc0..`` of the given widths, with BatchNorm/Relu between them if asked."""
    net = Net(seed)
    x = "x"
    if input_bn:
        x = net.op("Relu", [net.batchnorm(x, widths[0], "bn_in")], "relu_in")
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        x = net.gemm(x, a, b, f"fc{i}", trans_b=trans_b[i % len(trans_b)])
        last = i == len(widths) - 2
        if bn and not last:
            x = net.batchnorm(x, b, f"bn{i}")
        if (relu and not last) or (out_relu and last):
            x = net.op("Relu", [x], f"relu{i}")
    return net.model(["N", widths[0]], x, ["N", widths[-1]])


def jsc_three_linear_layers(seed: int = 0) -> onnx.ModelProto:
    """The lab's shape: BN16-ReLU-Gemm(16,16)-ReLU-Gemm(16,16)-ReLU-Gemm(16,5)-ReLU."""
    return gemm_chain([16, 16, 16, 5], seed=seed, input_bn=True, out_relu=True)


def digits_cnn(seed: int = 0, *, bn: bool = False, depthwise: bool = False) -> onnx.ModelProto:
    """digits-cnn as exported: Conv,Relu,Conv,Relu,MaxPool,Conv,Relu,ReduceMean,Reshape,Gemm."""
    net = Net(seed)
    x = net.conv("x", 1, 16, "conv0")
    x = net.op("Relu", [net.batchnorm(x, 16, "bn0") if bn else x], "relu0")
    if depthwise:
        x = net.op("Relu", [net.conv(x, 16, 16, "dw", group=16)], "relu_dw")
    x = net.op("Relu", [net.conv(x, 16, 32, "conv1")], "relu1")
    x = net.op("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
    x = net.op("Relu", [net.conv(x, 32, 64, "conv2")], "relu2")
    x = net.op("ReduceMean", [x, net.const("axes", np.array([-1, -2]))], "mean", keepdims=1)
    x = net.op("Reshape", [x, net.const("shape", np.array([-1, 64]))], "flat", allowzero=1)
    return net.model(["N", 1, 8, 8], net.gemm(x, 64, 10, "head"), ["N", 10])


def residual_model():
    """fc0 -> Relu -> fc1 -> BN -> Relu, added back to fc0's output (one joined group)."""
    net = Net(3)
    a = net.op("Relu", [net.gemm("x", 8, 6, "fc0")], "r0")
    b = net.op("Relu", [net.batchnorm(net.gemm(a, 6, 6, "fc1"), 6, "bn1")], "r1")
    return net.model(["N", 8], net.gemm(net.op("Add", [a, b], "res"), 6, 3, "fc2"), ["N", 3])


def qdq_model():
    """Gemm -> Relu -> per-tensor QuantizeLinear/DequantizeLinear -> Gemm."""
    net = Net(4)
    x = net.op("Relu", [net.gemm("x", 8, 6, "fc0")], "r0")
    scale, zero = net.const("s", np.float32(0.02)), net.const("z", np.uint8(0))
    x = net.op(
        "DequantizeLinear", [net.op("QuantizeLinear", [x, scale, zero], "q"), scale, zero], "dq"
    )
    return net.model(["N", 8], net.gemm(x, 6, 3, "fc1"), ["N", 3])


def matmul_sequences_model():
    """MatMul + bias Add on (N, 4, 8) sequences, Relu, MatMul."""
    net = Net(5)
    x = net.op(
        "Add",
        [net.op("MatMul", ["x", net.rand("w0", (8, 6))], "mm0"), net.rand("b0", (6,))],
        "bias0",
    )
    x = net.op("MatMul", [net.op("Relu", [x], "r0"), net.rand("w1", (6, 3))], "mm1")
    return net.model(["N", 4, 8], x, ["N", 4, 3])


def nhwc_linear_model():
    """Conv -> Relu -> Transpose to NHWC -> MatMul over channels (no bias)."""
    net = Net(6)
    x = net.op("Relu", [net.conv("x", 2, 5, "conv0")], "r0")
    x = net.op("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])
    y = net.op("MatMul", [x, net.rand("w1", (5, 4))], "mm1")
    return net.model(["N", 2, 3, 3], y, ["N", 3, 3, 4])


def softmax_model(opset: int, op: str = "Softmax", axis: int | None = 1, conv: bool = False):
    """MatMul on (N, 4, 8) -> op(axis) -> MatMul (channels on axis 2), or with ``conv``
    Conv -> op(axis) -> Conv on (N, 2, 3, 3) (channels on axis 1); ``axis=None``: default."""
    net = Net(7)
    attrs = {} if axis is None else {"axis": axis}
    if conv:
        x = net.op(op, [net.conv("x", 2, 4, "conv0")], "sm", **attrs)
        return net.model(["N", 2, 3, 3], net.conv(x, 4, 3, "conv1"), ["N", 3, 3, 3], opset)
    x = net.op(op, [net.op("MatMul", ["x", net.rand("w0", (8, 6))], "mm0")], "sm", **attrs)
    y = net.op("MatMul", [x, net.rand("w1", (6, 3))], "mm1")
    return net.model(["N", 4, 8], y, ["N", 4, 3], opset)


def check(model: onnx.ModelProto) -> None:
    """The checker (full) and strict shape inference accept the model."""
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The model's first output in onnxruntime."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def initializer(model: onnx.ModelProto, node_name: str, index: int) -> np.ndarray:
    """The constant feeding input ``index`` of the node called ``node_name``."""
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = {t.name: t for t in model.graph.initializer}
    return numpy_helper.to_array(inits[node.input[index]])


def _conv(x, w, b, attrs):
    group = attrs.get("group", 1)
    pads = attrs.get("pads", [0] * 4)
    assert attrs.get("strides", [1, 1]) == [1, 1] and attrs.get("dilations", [1, 1]) == [1, 1]
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])])
    n, _, h, wd = xp.shape
    m, cg, kh, kw = w.shape
    out = np.zeros((n, m, h - kh + 1, wd - kw + 1))
    per = m // group
    for o in range(m):
        g = o // per
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg : (g + 1) * cg, i : i + out.shape[2], j : j + out.shape[3]]
                out[:, o] += np.einsum("nchw,c->nhw", patch, w[o, :, i, j])
    return out + (0 if b is None else b.reshape(1, -1, 1, 1))


def numpy_forward(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """An independent float64 numpy interpreter for the ops the tiny models use."""
    env = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    env["x"] = x.astype(np.float64)
    for node in model.graph.node:
        ins = [env[i] if i else None for i in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        env[node.output[0]] = _OPS[node.op_type](ins, attrs)
    return env[model.graph.output[0].name]


def _gemm(ins, a):
    x, w = ins[0], ins[1]
    y = a.get("alpha", 1.0) * (x @ (w.T if a.get("transB", 0) else w))
    return y + (a.get("beta", 1.0) * ins[2] if len(ins) > 2 else 0)


def _bn(ins, a):
    x, s, b, m, v = ins
    shape = (1, -1) + (1,) * (x.ndim - 2)
    r = lambda t: t.reshape(shape)  # noqa: E731
    return (x - r(m)) / np.sqrt(r(v) + a.get("epsilon", 1e-5)) * r(s) + r(b)


def _maxpool(ins, a):
    x, (k, _) = ins[0], a["kernel_shape"]
    n, c, h, w = x.shape
    return x.reshape(n, c, h // k, k, w // k, k).max(axis=(3, 5))


def _reshape(ins, a):
    shape = [int(d) for d in ins[1]]
    return ins[0].reshape([ins[0].shape[i] if d == 0 else d for i, d in enumerate(shape)])


def _quantize(ins, a):
    scale, zero = ins[1], ins[2]
    return np.clip(np.round(ins[0] / scale) + zero, 0, 255)  # uint8; np.round is half to even


_OPS = {
    "QuantizeLinear": _quantize,
    "DequantizeLinear": lambda ins, a: (ins[0] - ins[2]) * ins[1],
    "Gemm": _gemm,
    "BatchNormalization": _bn,
    "MaxPool": _maxpool,
    "Reshape": _reshape,
    "MatMul": lambda ins, a: ins[0] @ ins[1],
    "Add": lambda ins, a: ins[0] + ins[1],
    "Relu": lambda ins, a: np.maximum(ins[0], 0),
    "Identity": lambda ins, a: ins[0],
    "Transpose": lambda ins, a: np.transpose(ins[0], a["perm"]),
    "Conv": lambda ins, a: _conv(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a),
    "ReduceMean": lambda ins, a: ins[0].mean(axis=tuple(int(i) for i in ins[1]), keepdims=True),
    "GlobalAveragePool": lambda ins, a: ins[0].mean(axis=(2, 3), keepdims=True),
    "Flatten": lambda ins, a: ins[0].reshape(len(ins[0]), -1),
}
