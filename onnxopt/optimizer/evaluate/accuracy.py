"""Top-1 accuracy and mean cross-entropy of a classifier, run in batches on onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from onnxopt.errors import DataError, EvaluationError, UsageError
from onnxopt.metrics import METRICS, MetricInputs
from onnxopt.runtime.base import Session
from onnxopt.runtime.io import ClassifierIO

OutputKind = Literal["logits", "probabilities"]

PROBABILITY_ATOL = 1e-4
"""Rows summing to 1 within this (or a few float16 ulps for float16 outputs) are probabilities."""

LOG_CLIP = float(np.finfo(np.float64).eps)
"""Probabilities are clipped to at least this before the log (as scikit-learn's log_loss)."""


@dataclass(frozen=True)
class AccuracyResult:
    """Accuracy, loss and predictions of one classifier on one split.

    Attributes:
        accuracy: Top-1 accuracy in [0, 1].
        loss: Mean cross-entropy (natural log).
        n_samples: Number of samples scored.
        num_classes: Number of class scores the model outputs.
        output_kind: Whether the output was read as logits or as probabilities.
        predictions: Predicted class per sample (int64).
        log_probabilities: ``(N, C)`` log-probabilities behind the loss.
    """

    accuracy: float
    loss: float
    n_samples: int
    num_classes: int
    output_kind: OutputKind
    predictions: np.ndarray = field(repr=False, compare=False)
    log_probabilities: np.ndarray = field(repr=False, compare=False, default=None)


def predict_scores(
    session: Session, io: ClassifierIO, x: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """Class scores ``(N, C)`` for model-ready inputs ``x``, computed in batches.

    A model with a fixed batch size is fed batches of exactly that size (the last one
    padded by repeating its final row; padded rows are dropped).

    Raises:
        UsageError: For a non-positive batch size.
        DataError: When ``x`` is empty.
        EvaluationError: When onnxruntime fails or the output is not one row per sample.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
    if len(x) == 0:
        raise DataError("the split has no samples; evaluate on a non-empty split")
    step = io.fixed_batch or batch_size
    chunks = [_run_batch(session, io, x[start : start + step]) for start in range(0, len(x), step)]
    return np.concatenate(chunks)


def _run_batch(session: Session, io: ClassifierIO, batch: np.ndarray) -> np.ndarray:
    rows = len(batch)
    if io.fixed_batch and rows < io.fixed_batch:
        pad = np.repeat(batch[-1:], io.fixed_batch - rows, axis=0)
        batch = np.concatenate([batch, pad])
    out = np.asarray(session.run({io.input_name: batch}, [io.output_name])[0])
    if out.ndim == 0 or out.shape[0] != len(batch):
        raise EvaluationError(
            f"output {io.output_name!r} has shape {list(out.shape)} for a batch of "
            f"{len(batch)}; its first dimension must be the batch"
        )
    return out[:rows].reshape(rows, -1)


def looks_like_probabilities(scores: np.ndarray) -> bool:
    """True when every row is non-negative and sums to 1 (within :data:`PROBABILITY_ATOL`)."""
    atol = PROBABILITY_ATOL
    if np.issubdtype(scores.dtype, np.floating):
        atol = max(atol, 4 * float(np.finfo(scores.dtype).eps))
    values = np.asarray(scores, dtype=np.float64)
    return bool((values >= 0).all() and np.allclose(values.sum(axis=1), 1.0, rtol=0, atol=atol))


def log_probabilities(scores: np.ndarray) -> tuple[np.ndarray, OutputKind]:
    """Per-class log-probabilities (float64) from logits or from probabilities.

    Logits go through a numerically stable log-softmax; probabilities are clipped to
    :data:`LOG_CLIP` and logged.
    """
    if looks_like_probabilities(scores):
        return np.log(np.clip(np.asarray(scores, dtype=np.float64), LOG_CLIP, 1.0)), "probabilities"
    z = np.asarray(scores, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True)), "logits"


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, *, output: str = "output"
) -> AccuracyResult:
    """Accuracy, mean cross-entropy and predictions from class scores.

    Args:
        scores: ``(N, C)`` logits or probabilities.
        labels: ``N`` integer labels in ``0..C-1``.
        output: Output name, for error messages.

    Returns:
        An :class:`AccuracyResult`.

    Raises:
        DataError: For labels the output cannot score, or an output with fewer than 2 classes.
        EvaluationError: When the scores contain NaN or Inf.
    """
    n, classes = scores.shape
    labels = _check_labels(labels, n, classes, output)
    bad = int((~np.isfinite(scores)).any(axis=1).sum())
    if bad:
        raise EvaluationError(f"output {output!r} has NaN or Inf scores for {bad} of {n} samples")
    logp, kind = log_probabilities(scores)
    inputs = MetricInputs(scores=scores, labels=labels, log_probabilities=logp)
    return AccuracyResult(
        accuracy=_formula("accuracy")(inputs),
        loss=_formula("loss")(inputs),
        n_samples=n,
        num_classes=classes,
        output_kind=kind,
        predictions=scores.argmax(axis=1).astype(np.int64),
        log_probabilities=logp,
    )


def _formula(name: str):
    compute = METRICS[name].compute
    assert compute is not None
    return compute


def _check_labels(labels: np.ndarray, n: int, classes: int, output: str) -> np.ndarray:
    labels = np.asarray(labels)
    if n == 0:
        raise DataError("the split has no samples; evaluate on a non-empty split")
    if classes < 2:
        raise DataError(
            f"model output {output!r} has {classes} score per sample; evaluation needs one "
            "score per class"
        )
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be {n} integers, got {labels.dtype} of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(
            f"labels range {int(labels.min())}..{int(labels.max())} but model output {output!r} "
            f"scores {classes} classes (0..{classes - 1}); use data that matches the model"
        )
    return labels.astype(np.int64)


def evaluate_accuracy(
    session: Session,
    io: ClassifierIO,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 256,
    num_classes: int | None = None,
) -> AccuracyResult:
    """Run a classifier on model-ready inputs and score it against labels.

    Args:
        session: The model's session.
        io: Its input and class-score output (:func:`classifier_io`).
        x: Inputs already fitted to the model (:func:`adapt_inputs`).
        labels: One integer label per sample.
        batch_size: Samples per run (ignored for a fixed-batch model).
        num_classes: The dataset's class count; the output must have exactly this many.

    Raises:
        DataError: When labels or the class count do not fit the output.
        EvaluationError: When onnxruntime fails or the output is NaN/Inf.
    """
    scores = predict_scores(session, io, x, batch_size=batch_size)
    if num_classes is not None and scores.shape[1] != num_classes:
        raise DataError(
            f"model output {io.output_name!r} scores {scores.shape[1]} classes but the dataset "
            f"has {num_classes}; use data that matches the model"
        )
    return classification_metrics(scores, labels, output=io.output_name)
