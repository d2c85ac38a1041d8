"""Run a QONNX model with qonnx's own executor and compare it with onnxruntime on the QDQ model."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx

from onnxopt.fpga.compare import Comparison, compare, model_inputs, reference_outputs
from onnxopt.fpga.extra import require


def run_qonnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The first output of ``model`` on the batch ``x`` through ``qonnx.core.onnx_exec``
    (Quant nodes in numpy, the other nodes one onnxruntime session each)."""
    wrapper_mod = require("qonnx.core.modelwrapper", "the QONNX check")
    exec_mod = require("qonnx.core.onnx_exec", "the QONNX check")
    batch_mod = require("qonnx.transformation.change_batchsize", "the QONNX check")
    shapes_mod = require("qonnx.transformation.infer_shapes", "the QONNX check")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        wrapper = wrapper_mod.ModelWrapper(onnx.ModelProto.FromString(model.SerializeToString()))
        wrapper = wrapper.transform(batch_mod.ChangeBatchSize(int(x.shape[0])))
        wrapper = wrapper.transform(shapes_mod.InferShapes())
        name_in = wrapper.graph.input[0].name
        name_out = wrapper.graph.output[0].name
        return np.asarray(exec_mod.execute_onnx(wrapper, {name_in: x})[name_out])


def check_qonnx(qonnx: onnx.ModelProto, qdq: onnx.ModelProto, x: np.ndarray) -> Comparison:
    """qonnx's executor on ``qonnx`` against onnxruntime on ``qdq``, value by value."""
    expected = reference_outputs(qdq, x)
    got = run_qonnx(qonnx, model_inputs(qdq, x))
    return compare("qonnx executor", got, expected)
