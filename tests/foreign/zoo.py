"""Tiny models with the traits of files other tools write, each with pre-split data.

Every kind is a digits classifier (64 features, 10 classes unless the kind says otherwise)
whose first layer is random and whose last layer is a ridge fit on the training split, so
it scores well above chance without training; what differs is the trait: unnamed nodes, a
fixed batch, an old opset, a CNN with symbolic height and width and weights in Constant
nodes followed by BatchNormalization, two float inputs, a float input with an int64 mask,
a state input the config fixes, a single sigmoid output, a split that lacks a class.

A kind carries what a user would give the CLI for it: the ``.npz`` arrays (``<input>_<split>``
and ``y_<split>``), the ``[model]`` lines of a search config, the evaluate/quantize options,
and whether ``scale`` has a group to scale. ``reference(kind, split)`` runs the original
file in onnxruntime on that split, for tests that compare a command's output with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits

SPLITS = ("train", "val", "test")
HIDDEN = 32
LARGE_BATCH = 789_444


@dataclass
class Kind:
    """One test model and everything a user hands onnxopt with it."""

    name: str
    model: onnx.ModelProto
    arrays: dict[str, np.ndarray]
    model_toml: str = ""
    options: list[str] = field(default_factory=list)
    scale_layer: str | None = None
    binary: bool = False
    reference_model: onnx.ModelProto | None = None  # the same graph taking any batch
    fixed: dict[str, float] = field(default_factory=dict)  # inputs the config fixes

    def save(self, folder: Path) -> tuple[Path, Path]:
        """``(model.onnx, data.npz)`` written under ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        model, data = folder / f"{self.name}.onnx", folder / f"{self.name}.npz"
        onnx.save(self.model, model)
        np.savez(data, **self.arrays)
        return model, data

    def data(self, split: str) -> dict[str, np.ndarray]:
        """The data's arrays for the model's inputs on one split."""
        return {k[: -len(split) - 1]: v for k, v in self.arrays.items()
                if k.endswith(f"_{split}") and not k.startswith("y_")}  # fmt: skip

    def feeds(self, split: str) -> dict[str, np.ndarray]:
        """Every input of the model on one split, fixed ones at their declared shape."""
        out = self.data(split)
        for name, value in self.fixed.items():
            info = next(i for i in self.model.graph.input if i.name == name)
            shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
            out[name] = np.full(shape, value, np.float32)
        return out

    def labels(self, split: str) -> np.ndarray:
        return self.arrays[f"y_{split}"]


def _digits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order].astype(np.int64)
    a, b = int(0.6 * len(y)), int(0.8 * len(y))
    return {"train": (x[:a], y[:a]), "val": (x[a:b], y[a:b]), "test": (x[b:], y[b:])}


DIGITS = _digits()
RNG = np.random.default_rng(0)
W1 = (RNG.standard_normal((64, HIDDEN)) * 0.4).astype(np.float32)
B1 = (RNG.standard_normal(HIDDEN) * 0.1).astype(np.float32)


def _ridge(features: np.ndarray, targets: np.ndarray, lam: float = 1e-2) -> np.ndarray:
    """Least-squares readout ``(F + 1, T)`` with the bias as the last row."""
    f = np.hstack([features, np.ones((len(features), 1), np.float32)]).astype(np.float64)
    if f.shape[1] > f.shape[0]:  # more features than samples: the dual form is smaller
        w = f.T @ np.linalg.solve(f @ f.T + lam * np.eye(len(f)), targets)
    else:
        w = np.linalg.solve(f.T @ f + lam * np.eye(f.shape[1]), f.T @ targets)
    return w.astype(np.float32)


def _readout(hidden: Callable[[np.ndarray], np.ndarray], classes: int = 10, binary=False):
    x, y = DIGITS["train"]
    targets = (y >= 5).astype(np.float32)[:, None] * 8 - 4 if binary else np.eye(classes)[y]
    w = _ridge(hidden(x), targets)
    return w[:-1], w[-1]


def _mlp_hidden(x: np.ndarray) -> np.ndarray:
    return np.maximum(x @ W1 + B1, 0)


def _info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _t(array: np.ndarray, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array), name)


def _model(nodes, inputs, outputs, inits=(), opset=17, ir_version=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "foreign", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def _arrays(transform=lambda x: {"x": x}, labels=lambda y: y) -> dict[str, np.ndarray]:
    out = {}
    for split in SPLITS:
        x, y = DIGITS[split]
        out.update({f"{k}_{split}": v for k, v in transform(x).items()})
        out[f"y_{split}"] = labels(y)
    return out


def _mlp_nodes(x: str = "x", name: bool = True) -> tuple[list, list]:
    w2, b2 = _readout(_mlp_hidden)
    inits = [_t(W1, "w1"), _t(B1, "b1"), _t(w2, "w2"), _t(b2, "b2")]
    nodes = [
        helper.make_node("MatMul", [x, "w1"], ["h0"], name="fc1" if name else ""),
        helper.make_node("Add", ["h0", "b1"], ["h"], name="fc1_bias" if name else ""),
        helper.make_node("Relu", ["h"], ["r"], name="relu" if name else ""),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2" if name else ""),
    ]
    return nodes, inits


def unnamed() -> Kind:
    nodes, inits = _mlp_nodes(name=False)
    model = _model(nodes, [_info("x", ["N", 64])], [_info("y", ["N", 10])], inits)
    return Kind("unnamed", model, _arrays(), scale_layer="MatMul_0")


def fixed_batch(batch: int, name: str) -> Kind:
    nodes, inits = _mlp_nodes()
    model = _model(nodes, [_info("x", [batch, 64])], [_info("y", [batch, 10])], inits)
    free = _model(nodes, [_info("x", ["N", 64])], [_info("y", ["N", 10])], inits)
    return Kind(name, model, _arrays(), scale_layer="fc1", reference_model=free)


def baked_batch() -> Kind:
    """Batch fixed at 1 and baked into a Reshape's constant shape: it cannot be freed."""
    nodes, inits = _mlp_nodes(x="xr")
    nodes.insert(0, helper.make_node("Reshape", ["x", "shape"], ["xr"], name="flatten_batch1"))
    inits.append(_t(np.array([1, 64], np.int64), "shape"))
    model = _model(nodes, [_info("x", [1, 64])], [_info("y", [1, 10])], inits)
    return Kind("baked_batch", model, _arrays())


def old_opset() -> Kind:
    """Opset 7 and IR version 3: Gemm with transB and a bias, weights listed as inputs."""
    w2, b2 = _readout(_mlp_hidden)
    inits = [_t(W1.T, "w1"), _t(B1, "b1"), _t(w2.T, "w2"), _t(b2, "b2")]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1, name="fc2"),
    ]
    inputs = [_info("x", ["N", 64])] + [_info(t.name, list(t.dims)) for t in inits]
    model = _model(nodes, inputs, [_info("y", ["N", 10])], inits, opset=7, ir_version=3)
    return Kind("old_opset", model, _arrays(), scale_layer="fc1")


CNN_CHANNELS = (8, 8)


def _conv_bn(x: str, cin: int, cout: int, i: int, rng) -> list[onnx.NodeProto]:
    """Conv (3x3, pad 1, weights in Constant nodes) -> BatchNormalization -> Relu."""
    w = (rng.standard_normal((cout, cin, 3, 3)) * (1.0 / np.sqrt(9 * cin))).astype(np.float32)
    consts = {
        f"cw{i}": w, f"cb{i}": (rng.standard_normal(cout) * 0.1).astype(np.float32),
        f"s{i}": rng.uniform(0.5, 1.5, cout).astype(np.float32),
        f"t{i}": (rng.standard_normal(cout) * 0.1).astype(np.float32),
        f"m{i}": (rng.standard_normal(cout) * 0.1).astype(np.float32),
        f"v{i}": rng.uniform(0.5, 1.5, cout).astype(np.float32),
    }  # fmt: skip
    nodes = [helper.make_node("Constant", [], [k], value=_t(v, k)) for k, v in consts.items()]
    return nodes + [
        helper.make_node("Conv", [x, f"cw{i}", f"cb{i}"], [f"c{i}"], pads=[1, 1, 1, 1],
                         name=f"conv{i}"),
        helper.make_node("BatchNormalization", [f"c{i}", f"s{i}", f"t{i}", f"m{i}", f"v{i}"],
                         [f"n{i}"], name=f"bn{i}"),
        helper.make_node("Relu", [f"n{i}"], [f"a{i}"], name=f"act{i}"),
    ]  # fmt: skip


def cnn_dynamic(size: int = 8, channels: tuple[int, ...] = CNN_CHANNELS) -> Kind:
    """Input ``(N, 1, H, W)`` with H and W symbolic; two Conv->BN->Relu blocks (weights in
    Constant nodes), Flatten and a Gemm readout (as torch exports a CNN whose height and
    width were marked dynamic: the readout only fits one size, here ``size``, the side the
    8x8 digits are upsampled to; ``channels`` the output channels of each block)."""
    rng = np.random.default_rng(1)
    nodes, cin = [], 1
    for i, cout in enumerate(channels):
        nodes += _conv_bn("x" if i == 0 else f"a{i - 1}", cin, cout, i, rng)
        cin = cout
    nodes.append(helper.make_node("Flatten", [f"a{len(channels) - 1}"], ["f"], name="flat"))
    images = _images(size)
    inputs = [_info("x", ["N", 1, "H", "W"])]
    body = _model(nodes, inputs, [_info("f", ["N", "F"])])
    session = ort.InferenceSession(body.SerializeToString(), providers=["CPUExecutionProvider"])
    w, b = _readout(lambda x: session.run(None, {"x": images(x)})[0])
    nodes.append(helper.make_node("Gemm", ["f", "fcw", "fcb"], ["y"], name="fc"))
    inits = [_t(w, "fcw"), _t(b, "fcb")]
    model = _model(nodes, inputs, [_info("y", ["N", 10])], inits)
    return Kind("cnn_dynamic", model, _arrays(lambda x: {"x": images(x)}), scale_layer="conv0")


def _images(size: int) -> Callable[[np.ndarray], np.ndarray]:
    def images(x: np.ndarray) -> np.ndarray:
        grid = x.reshape(-1, 1, 8, 8)
        k = size // 8
        return np.kron(grid, np.ones((1, 1, k, k), np.float32)) if k > 1 else grid

    return images


def two_inputs() -> Kind:
    """Inputs ``left`` and ``right`` (32 features each), one MatMul per input, summed."""
    w2, b2 = _readout(_mlp_hidden)
    inits = [_t(W1[:32], "wl"), _t(W1[32:], "wr"), _t(B1, "b1"), _t(w2, "w2"), _t(b2, "b2")]
    nodes = [
        helper.make_node("MatMul", ["left", "wl"], ["hl"], name="fc_left"),
        helper.make_node("MatMul", ["right", "wr"], ["hr"], name="fc_right"),
        helper.make_node("Add", ["hl", "hr"], ["h0"], name="join"),
        helper.make_node("Add", ["h0", "b1"], ["h"], name="bias"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], name="fc2"),
    ]
    inputs = [_info("left", ["N", 32]), _info("right", ["N", 32])]
    model = _model(nodes, inputs, [_info("y", ["N", 10])], inits)
    arrays = _arrays(lambda x: {"left": x[:, :32], "right": x[:, 32:]})
    return Kind("two_inputs", model, arrays, scale_layer="fc_left")


def int_mask() -> Kind:
    """A float input and an int64 mask of the same shape multiplied into it (ids-and-mask
    models pass their mask the same way)."""
    nodes, inits = _mlp_nodes(x="masked")
    nodes[:0] = [
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT, name="mask_cast"),
        helper.make_node("Mul", ["x", "maskf"], ["masked"], name="apply_mask"),
    ]
    inputs = [_info("x", ["N", 64]), _info("mask", ["N", 64], TensorProto.INT64)]
    model = _model(nodes, inputs, [_info("y", ["N", 10])], inits)
    rng = np.random.default_rng(2)

    def transform(x):
        return {"x": x, "mask": (rng.random(x.shape) > 0.05).astype(np.int64)}

    return Kind("int_mask", model, _arrays(transform), scale_layer="fc1")


def state_fixed() -> Kind:
    """A recurrent-style ``state`` input added to the hidden layer; the data do not give it,
    the config fixes it to zeros."""
    nodes, inits = _mlp_nodes()
    nodes.insert(2, helper.make_node("Add", ["h", "state"], ["hs"], name="add_state"))
    nodes[3] = helper.make_node("Relu", ["hs"], ["r"], name="relu")
    inputs = [_info("x", ["N", 64]), _info("state", [1, HIDDEN])]
    model = _model(nodes, inputs, [_info("y", ["N", 10])], inits)
    return Kind(
        "state_fixed", model, _arrays(), model_toml="[model.inputs.state]\nvalue = 0.0\n",
        options=["--input-value", "state=0"], fixed={"state": 0.0},
    )  # fmt: skip  (no scale_layer: its hidden width is the state's, so frozen)


def sigmoid_output() -> Kind:
    """Binary (digit >= 5): one sigmoid probability per sample, output ``(N, 1)``."""
    w2, b2 = _readout(_mlp_hidden, binary=True)
    inits = [_t(W1, "w1"), _t(B1, "b1"), _t(w2, "w2"), _t(b2, "b2")]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h"], name="fc1_bias"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["logit"], name="fc2"),
        helper.make_node("Sigmoid", ["logit"], ["p"], name="sigmoid"),
    ]
    model = _model(nodes, [_info("x", ["N", 64])], [_info("p", ["N", 1])], inits)
    arrays = _arrays(labels=lambda y: (y >= 5).astype(np.int64))
    return Kind("sigmoid_output", model, arrays, scale_layer="fc1", binary=True)


def missing_class() -> Kind:
    """A 10-class model whose data hold no sample of class 9 in any split."""
    nodes, inits = _mlp_nodes()
    model = _model(nodes, [_info("x", ["N", 64])], [_info("y", ["N", 10])], inits)
    arrays = {}
    for split in SPLITS:
        x, y = DIGITS[split]
        keep = y != 9
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x[keep], y[keep]
    return Kind("missing_class", model, arrays, scale_layer="fc1")


KINDS: dict[str, Callable[[], Kind]] = {
    "unnamed": unnamed,
    "batch_1": lambda: fixed_batch(1, "batch_1"),
    "batch_large": lambda: fixed_batch(LARGE_BATCH, "batch_large"),
    "old_opset": old_opset,
    "cnn_dynamic": cnn_dynamic,
    "two_inputs": two_inputs,
    "int_mask": int_mask,
    "state_fixed": state_fixed,
    "sigmoid_output": sigmoid_output,
    "missing_class": missing_class,
}


def reference(kind: Kind, split: str = "test", model: onnx.ModelProto | None = None):
    """The outputs of ``model`` (default: the original) on one split, run by onnxruntime
    (the reference evaluator for opsets onnxruntime no longer loads)."""
    model = model or kind.reference_model or kind.model
    feeds = kind.feeds(split)
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    except Exception:  # noqa: BLE001 - onnxruntime refuses very old opsets
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, feeds)[0]
    return session.run(None, feeds)[0]


def accuracy(kind: Kind, outputs: np.ndarray, split: str = "test") -> float:
    """Accuracy of outputs against the split's labels (threshold 0.5 for the binary kind)."""
    y = kind.labels(split)
    predicted = (outputs[:, 0] > 0.5).astype(np.int64) if kind.binary else outputs.argmax(1)
    return float((predicted == y).mean())
