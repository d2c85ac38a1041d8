"""Accuracy and loss against scikit-learn on numpy-computed logits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import log_softmax
from sklearn.metrics import accuracy_score, log_loss

from onnxopt.errors import DataError, EvaluationError
from onnxopt.optimizer.evaluate import (
    classification_metrics,
    evaluate_accuracy,
    log_probabilities,
    looks_like_probabilities,
)
from onnxopt.runtime.io import model_io
from onnxopt.runtime.ort import OrtBackend

load_session = OrtBackend().load


def _labels_mostly_right(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels that agree with the logits' argmax for about 70% of samples."""
    noise = rng.integers(0, logits.shape[1], size=len(logits))
    return np.where(rng.random(len(logits)) < 0.7, logits.argmax(axis=1), noise).astype(np.int64)


def _evaluate(model, x, y, **kwargs):
    session = load_session(model)
    return evaluate_accuracy(session, model_io(session), x, y, **kwargs)


@pytest.mark.parametrize("batch_size", [1, 7, 256, 1000])
def test_logits_match_sklearn(gemm_builder, gemm_weights, data, reference, rng, batch_size):
    numpy_logits, softmax = reference
    x, _ = data
    logits = numpy_logits(x, *gemm_weights)
    y = _labels_mostly_right(logits, rng)
    result = _evaluate(gemm_builder(*gemm_weights), x, y, batch_size=batch_size)
    assert result.output_kind == "logits" and result.n_samples == len(y) == 300
    np.testing.assert_array_equal(result.predictions, logits.argmax(axis=1))
    assert result.accuracy == accuracy_score(y, logits.argmax(axis=1))
    assert 0.5 < result.accuracy < 1.0
    expected_loss = log_loss(y, softmax(logits), labels=range(5))
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_probability_output_is_logged_not_softmaxed(gemm_builder, gemm_weights, data, reference):
    numpy_logits, softmax = reference
    x, y = data
    result = _evaluate(gemm_builder(*gemm_weights, softmax=True), x, y)
    probabilities = softmax(numpy_logits(x, *gemm_weights))
    assert result.output_kind == "probabilities"
    assert result.loss == pytest.approx(log_loss(y, probabilities, labels=range(5)), rel=1e-5)
    assert result.accuracy == accuracy_score(y, probabilities.argmax(axis=1))


def test_fixed_batch_model_is_padded(gemm_builder, gemm_weights, data):
    x, y = data
    dynamic = _evaluate(gemm_builder(*gemm_weights), x[:10], y[:10])
    fixed = _evaluate(gemm_builder(*gemm_weights, batch=4), x[:10], y[:10], batch_size=256)
    np.testing.assert_array_equal(fixed.predictions, dynamic.predictions)
    assert fixed.loss == pytest.approx(dynamic.loss, rel=1e-6)


def test_log_softmax_is_stable_for_huge_logits():
    scores = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]])
    logp, kind = log_probabilities(scores)
    assert kind == "logits" and np.isfinite(logp).all()
    np.testing.assert_allclose(logp, log_softmax(scores, axis=1))
    result = classification_metrics(scores, np.array([0, 0]))
    assert result.loss == pytest.approx(1e5 / 2)  # sample 0 costs ~0, sample 1 costs 1e5


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 8), st.integers(2, 6)),
              elements=st.floats(-300, 300)))  # fmt: skip
def test_log_probabilities_match_scipy(logits):
    logp, _ = log_probabilities(logits)
    if not looks_like_probabilities(logits):
        np.testing.assert_allclose(logp, log_softmax(logits, axis=1), atol=1e-9)
        np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=1e-12)


def test_probability_detection_and_clipping():
    probabilities = np.array([[0.0, 1.0], [0.25, 0.75]], dtype=np.float32)
    assert looks_like_probabilities(probabilities)
    assert not looks_like_probabilities(np.array([[-0.5, 1.5]]))
    assert not looks_like_probabilities(np.array([[0.5, 0.6]]))
    result = classification_metrics(probabilities, np.array([0, 1]))
    expected = log_loss([0, 1], probabilities.astype(np.float64), labels=[0, 1])
    assert result.loss == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(result.loss)


def test_labels_outside_class_count_are_data_errors(gemm_builder, gemm_weights, data):
    x, y = data
    bad = y.copy()
    bad[3] = 5
    with pytest.raises(DataError, match=r"labels range 0..5 but model output 'logits' scores 5"):
        _evaluate(gemm_builder(*gemm_weights), x, bad)
    with pytest.raises(DataError, match="scores 5 classes but the dataset has 10"):
        _evaluate(gemm_builder(*gemm_weights), x, y, num_classes=10)
    with pytest.raises(DataError, match="no samples"):
        _evaluate(gemm_builder(*gemm_weights), x[:0], y[:0])


def test_nan_scores_are_refused():
    with pytest.raises(EvaluationError, match="NaN or Inf scores for 1 of 2"):
        classification_metrics(np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([0, 1]))


def test_a_single_score_per_sample_is_a_binary_classifier():
    """Probabilities in [0, 1] are thresholded at 0.5, logits at 0; the loss is the binary
    cross-entropy, written out here."""
    labels = np.array([1, 0, 1, 0])
    probs = np.array([[0.9], [0.2], [0.4], [0.6]])
    result = classification_metrics(probs, labels)
    assert result.accuracy == 0.5 and result.output_kind == "probabilities"
    bce = -np.mean([np.log(0.9), np.log(0.8), np.log(0.4), np.log(0.4)])
    assert result.loss == pytest.approx(bce)
    logits = np.array([2.0, -1.0, -0.5, 3.0])  # a 1-D logit output
    result = classification_metrics(logits, labels)
    assert result.accuracy == 0.5 and result.output_kind == "logits"
    p = 1 / (1 + np.exp(-logits))
    assert result.loss == pytest.approx(-np.mean(np.where(labels == 1, np.log(p), np.log(1 - p))))
