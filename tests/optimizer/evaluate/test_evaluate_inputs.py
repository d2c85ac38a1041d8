"""Fitting dataset features to a model input: reshape, dtype, clear mismatch errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score

from onnxopt.data.shaping import adapt_inputs
from onnxopt.errors import DataError
from onnxopt.optimizer.evaluate import (
    evaluate_accuracy,
)
from onnxopt.runtime.io import Feeds, model_io
from onnxopt.runtime.ort import OrtBackend

load_session = OrtBackend().load


def test_flat_digits_feed_an_image_input(cnn_builder, reference, rng):
    numpy_logits, _ = reference
    weight = rng.normal(size=(64, 10)).astype(np.float32)
    bias = rng.normal(size=10).astype(np.float32)
    x = rng.random((40, 64), dtype=np.float32)
    y = rng.integers(0, 10, size=40)
    session = load_session(cnn_builder(weight, bias))
    io = model_io(session)
    assert io.inputs[0].shape == ("N", 1, 8, 8)
    fitted = Feeds(io.inputs, x).arrays[io.input_name]
    assert fitted.shape == (40, 1, 8, 8) and fitted.flags.c_contiguous
    np.testing.assert_array_equal(fitted[:, 0], x.reshape(40, 8, 8))
    result = evaluate_accuracy(session, io, Feeds(io.inputs, x), y)
    assert result.accuracy == accuracy_score(y, numpy_logits(x, weight, bias).argmax(axis=1))


def test_feature_count_mismatch_message():
    with pytest.raises(DataError) as info:
        adapt_inputs(np.zeros((3, 64)), ["batch", 16], input_name="x")
    assert str(info.value) == (
        "dataset has 64 features per sample but model input 'x' expects 16 "
        "(shape ['batch', 16]); use data that matches the model"
    )
    assert info.value.exit_code == 2


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_cast_to_input_dtype(dtype):
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    fitted = adapt_inputs(x, ["N", 2, 3], dtype=dtype)
    assert fitted.dtype == dtype and fitted.shape == (2, 2, 3)
    np.testing.assert_array_equal(fitted.reshape(2, 6), x.astype(dtype))


def test_float16_overflow_and_flat_vectors_are_refused():
    with pytest.raises(DataError, match="float16 range"):
        adapt_inputs(np.full((1, 4), 1e6), ["N", 4], dtype=np.float16)
    with pytest.raises(DataError, match=r"shape \(samples, features\)"):
        adapt_inputs(np.zeros(4), ["N", 4])


def test_symbolic_feature_dims_need_matching_rank():
    x = np.zeros((2, 3, 5), np.float32)
    assert adapt_inputs(x, ["N", "T", 5]).shape == (2, 3, 5)
    with pytest.raises(DataError, match=r"samples have shape \[15\] but model input 'inp'"):
        adapt_inputs(x.reshape(2, 15), ["N", "T", 5], input_name="inp")
    with pytest.raises(DataError, match="symbolic"):
        adapt_inputs(x, ["N", "T", 4])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(1, 3))
def test_reshape_keeps_row_major_order(dims, n):
    features = int(np.prod(dims))
    x = np.arange(n * features, dtype=np.float32).reshape(n, features)
    fitted = adapt_inputs(x, ["N", *dims])
    assert fitted.shape == (n, *dims)
    np.testing.assert_array_equal(fitted.reshape(n, -1), x)


def test_input_arrays_of_different_lengths_are_one_data_error():
    from onnxopt.runtime.base import TensorInfo

    inputs = [TensorInfo(n, ("N", 4), np.dtype(np.float32), "tensor(float)") for n in "ab"]
    data = {"a": np.zeros((10, 4), np.float32), "b": np.zeros((1, 4), np.float32)}
    with pytest.raises(DataError, match=r"different numbers of samples \('a' 10, 'b' 1\)"):
        Feeds(inputs, data)
    assert len(Feeds(inputs, {"a": data["a"], "b": np.ones((10, 4))})) == 10
