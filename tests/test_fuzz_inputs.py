"""Fuzzing the loaders: whatever bytes or text come in, the outcome is a result or an OnnxoptError.

Random and mutated (bit flips, truncation, insertion, deletion) bytes of a small valid model
go to ``load_onnx`` and on to ``prepare_user_model``; random, mutated and randomly structured
TOML goes to the quantization, width and search config loaders. Any other exception (a
protobuf, onnx, tomllib, pydantic or Unicode error escaping) would reach the user as a
traceback instead of one line.
"""

from __future__ import annotations

import tempfile
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxopt.config import load_toml
from onnxopt.config.quantization import QuantizationConfig
from onnxopt.config.search import load_search_config
from onnxopt.config.width import WidthConfig
from onnxopt.errors import OnnxoptError
from onnxopt.exporters.user_model import Preparation, prepare_user_model
from onnxopt.model_io import load_onnx

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _small_model() -> bytes:
    """A Constant-weight MatMul, a Gemm with initializers, a Relu: small, so mutations bite."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    c = numpy_helper.from_array(np.ones((3, 3), np.float32), "cw")
    nodes = [
        helper.make_node("Constant", [], ["c"], value=c, name="const"),
        helper.make_node("Gemm", ["x", "w"], ["h"], name="fc"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "c"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.metadata_props.add(key="source", value="fuzz")
    return model.SerializeToString()


MODEL = _small_model()


def _mutate(data: bytes, edits: list[tuple[str, int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, pos, size, chunk in edits:
        pos = pos % (len(out) + 1)
        if kind == "flip" and out:
            out[pos % len(out)] ^= 1 << (size % 8)
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = chunk
        elif kind == "delete":
            del out[pos : pos + size]
        else:  # overwrite
            out[pos : pos + len(chunk)] = chunk
    return bytes(out)


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]),
        st.integers(0, 4096),
        st.integers(0, 64),
        st.binary(min_size=1, max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def _external_data_model() -> tuple[bytes, bytes]:
    """The same model with its tensors in ``model.onnx.data`` (model bytes, data bytes)."""
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load_model_from_string(MODEL)
    convert_model_to_external_data(model, location="model.onnx.data", size_threshold=0)
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save_model(model, str(Path(tmp) / "model.onnx"))
        return (Path(tmp) / "model.onnx").read_bytes(), (Path(tmp) / "model.onnx.data").read_bytes()


EXTERNAL, EXTERNAL_DATA = _external_data_model()


def _load_model_bytes(data: bytes, external: bytes | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        path.write_bytes(data)
        if external is not None:
            (Path(tmp) / "model.onnx.data").write_bytes(external)
        try:
            model = load_onnx(path)
            prepare_user_model(model, str(path), Preparation(opset=21))
        except OnnxoptError:
            pass  # one clear line: the expected outcome for a bad file


def test_the_base_models_load(tmp_path):
    (tmp_path / "model.onnx").write_bytes(MODEL)
    assert len(load_onnx(tmp_path / "model.onnx").graph.node) == 4
    (tmp_path / "model.onnx").write_bytes(EXTERNAL)
    (tmp_path / "model.onnx.data").write_bytes(EXTERNAL_DATA)
    loaded = load_onnx(tmp_path / "model.onnx")
    np.testing.assert_array_equal(
        numpy_helper.to_array(loaded.graph.initializer[0]), np.arange(12).reshape(4, 3)
    )


@settings(FUZZ, max_examples=300)
@given(EDITS)
def test_mutated_model_bytes_load_or_raise_onnxopt_errors(edits):
    _load_model_bytes(_mutate(MODEL, edits))


@pytest.mark.filterwarnings("ignore:Ignoring unknown external data key")
@FUZZ
@given(EDITS)
def test_mutated_external_data_references_load_or_raise_onnxopt_errors(edits):
    _load_model_bytes(_mutate(EXTERNAL, edits), EXTERNAL_DATA)


@FUZZ
@given(st.one_of(st.binary(max_size=400), st.binary(max_size=200).map(lambda b: b"\x08\x0a" + b)))
def test_random_bytes_load_or_raise_onnxopt_errors(data):
    _load_model_bytes(data)


# -- configs ----------------------------------------------------------------------------------

QUANT_TOML = (CONFIGS / "quantize-lab-by-type.toml").read_text()
WIDTH_TOML = (
    'importance = "weight_norm"\nrefit = "ridge"\nridge = 0.001\n'
    '[layers.fc0]\nmode = "both"\nchannel_multiplier = [0.25, 0.5, 2]\n'
)
SEARCH_TOML = (CONFIGS / "search-digits-wide-joint.toml").read_text()
LOADERS = {
    "quantization": lambda p: load_toml(p, QuantizationConfig),
    "width": lambda p: load_toml(p, WidthConfig),
    "search": load_search_config,
}
SEEDS = {"quantization": QUANT_TOML, "width": WIDTH_TOML, "search": SEARCH_TOML}
KEYS = [
    "storage",
    "granularity",
    "calibration",
    "method",
    "percentile",
    "num_samples",
    "default",
    "by_type",
    "by_name",
    "linear",
    "conv",
    "enabled",
    "data_in_width",
    "data_in_frac_width",
    "weight_width",
    "weight_frac_width",
    "bias_width",
    "data_out_width",
    "layers",
    "mode",
    "channel_multiplier",
    "importance",
    "refit",
    "ridge",
    "model",
    "recipe",
    "onnx",
    "data",
    "dataset",
    "search",
    "quantization",
    "width",
    "strategy",
    "sampler",
    "n_trials",
    "metrics",
    "accuracy",
    "direction",
    "scale",
    "constraints",
    "evaluation",
    "batch_sizes",
    "x",
]
SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True),
    st.booleans(),
    st.sampled_from(["NA", "auto", "tpe", "both", "digits", "packed", "", "../x", "\x00"]),
    st.text(max_size=8),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
TEXT_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["insert", "delete", "overwrite", "truncate"]),
        st.integers(0, 4000),
        st.integers(0, 40),
        st.text(alphabet='[]{}=".,#\n \\x0123456789-+eE_ab\x00\udcff\u00e9', max_size=8),
    ),
    min_size=1,
    max_size=4,
)


def _mutate_text(text: str, edits) -> str:
    for kind, pos, size, chunk in edits:
        pos = pos % (len(text) + 1)
        if kind == "insert":
            text = text[:pos] + chunk + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + size :]
        elif kind == "overwrite":
            text = text[:pos] + chunk + text[pos + len(chunk) :]
        else:
            text = text[:pos]
    return text


def _load_config(kind: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_bytes(data)
        try:
            LOADERS[kind](path)
        except OnnxoptError:
            pass


@pytest.mark.parametrize("kind", list(LOADERS))
def test_the_seed_configs_load(kind, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(SEEDS[kind])
    LOADERS[kind](path)


@pytest.mark.parametrize("kind", list(LOADERS))
@settings(FUZZ, max_examples=50)
@given(edits=TEXT_EDITS)
def test_mutated_toml_loads_or_raises_onnxopt_errors(kind, edits):
    text = _mutate_text(SEEDS[kind], edits)
    _load_config(kind, text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("kind", list(LOADERS))
@settings(FUZZ, max_examples=50)
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_random_text_loads_or_raises_onnxopt_errors(kind, data):
    _load_config(kind, data)


def _mutate_table(table: dict, data: st.DataObject) -> dict:
    """Replace, delete or add one entry at a random depth of a parsed config."""
    node = table
    while True:
        tables = [k for k, v in node.items() if isinstance(v, dict)]
        if not tables or data.draw(st.booleans()):
            break
        node = node[data.draw(st.sampled_from(tables))]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "delete" and node:
        del node[data.draw(st.sampled_from(sorted(node)))]
    elif action == "replace" and node:
        node[data.draw(st.sampled_from(sorted(node)))] = data.draw(VALUES)
    else:
        node[data.draw(st.sampled_from(KEYS) | st.text(max_size=6))] = data.draw(VALUES)
    return table


@pytest.mark.parametrize("kind", list(LOADERS))
@settings(FUZZ, max_examples=50)
@given(data=st.data())
def test_structurally_mutated_toml_loads_or_raises_onnxopt_errors(kind, data):
    table = tomllib.loads(SEEDS[kind])
    for _ in range(data.draw(st.integers(1, 3))):
        table = _mutate_table(table, data)
    try:
        text = tomli_w.dumps(table)
    except (TypeError, ValueError):  # tomli_w cannot write some values (e.g. surrogates)
        return
    _load_config(kind, text.encode("utf-8", "surrogatepass"))
