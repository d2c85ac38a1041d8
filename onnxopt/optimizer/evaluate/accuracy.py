"""Top-1 accuracy and mean cross-entropy of a classifier, run in batches on onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from onnxopt.errors import DataError, EvaluationError, UsageError
from onnxopt.metrics import METRICS, MetricInputs
from onnxopt.runtime.base import Session
from onnxopt.runtime.io import Feeds, ModelIO

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
    log_probabilities: np.ndarray = field(repr=False, compare=False)


def as_feeds(session: Session, io: ModelIO, x: Feeds | np.ndarray) -> Feeds:
    """``x`` as feeds: an array feeds a one-input model (reshaped to its input)."""
    return x if isinstance(x, Feeds) else Feeds(io.inputs, x)


def predict_scores(
    session: Session, io: ModelIO, x: Feeds | np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """The scored output for every sample, ``(N, ...)``, computed in batches.

    A model with a fixed batch size is fed batches of exactly that size (the last one
    padded by repeating its final row; padded rows are dropped).

    Raises:
        UsageError: For a non-positive batch size.
        DataError: When there are no samples.
        EvaluationError: When the runtime fails or the output is not one row per sample.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
    feeds = as_feeds(session, io, x)
    if len(feeds) == 0:
        raise DataError("the split has no samples; evaluate on a non-empty split")
    step = io.fixed_batch or batch_size
    chunks = [_run_batch(session, io, feeds, start, step) for start in range(0, len(feeds), step)]
    return np.concatenate(chunks)


def _run_batch(session: Session, io: ModelIO, feeds: Feeds, start: int, step: int) -> np.ndarray:
    index = np.arange(start, min(start + step, len(feeds)))
    rows = len(index)
    if io.fixed_batch and rows < io.fixed_batch:
        index = np.concatenate([index, np.full(io.fixed_batch - rows, index[-1])])
    out = np.asarray(session.run(feeds.rows(index), [io.output_name])[0])
    if out.ndim == 0 or out.shape[0] != len(index):
        raise EvaluationError(
            f"output {io.output_name!r} has shape {list(out.shape)} for a batch of "
            f"{len(index)}; its first dimension must be the batch"
        )
    return out[:rows]


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


def class_scores(outputs: np.ndarray, output: str = "output") -> tuple[np.ndarray, bool]:
    """``(N, C)`` class scores from a classifier's output, and whether it is binary.

    A single score per sample (``(N,)`` or ``(N, 1)``) is a binary classifier: a probability
    when every value lies in [0, 1] (a sigmoid output, threshold 0.5), else a logit
    (threshold 0); it becomes two columns whose softmax / values are ``[1 - p, p]``.
    """
    scores = np.asarray(outputs)
    if scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1):
        z = scores.reshape(len(scores)).astype(np.float64)
        if np.all((z >= 0) & (z <= 1)):
            return np.stack([1.0 - z, z], axis=1), True
        return np.stack([np.zeros_like(z), z], axis=1), True
    if scores.ndim != 2:
        raise DataError(
            f"model output {output!r} has shape {list(scores.shape)}; classification scores one "
            "row of class scores per sample: pick another output with --output-name or set "
            "the task (--task / [model] task) to the model's"
        )
    return scores, False


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, *, output: str = "output"
) -> AccuracyResult:
    """Accuracy, mean cross-entropy and predictions from a classifier's output.

    Args:
        scores: ``(N, C)`` logits or probabilities, or one binary score per sample.
        labels: ``N`` integer labels in ``0..C-1`` (classes may be missing from them).
        output: Output name, for error messages.

    Returns:
        An :class:`AccuracyResult`.

    Raises:
        DataError: For labels the output cannot score.
        EvaluationError: When the scores contain NaN or Inf.
    """
    scores, _ = class_scores(scores, output)
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
    return lambda inputs: compute(inputs, {})


def _check_labels(labels: np.ndarray | None, n: int, classes: int, output: str) -> np.ndarray:
    if n == 0:
        raise DataError("the split has no samples; evaluate on a non-empty split")
    if labels is None:
        raise DataError(
            "the data have no labels ('y'); classification metrics need one class per sample: "
            "add y to the data, or score fidelity to a reference model (task embedding)"
        )
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"labels must be integers 0..K-1, got dtype {labels.dtype} with non-integer values "
            "(regression targets?); set the task to regression (--task regression, [model] "
            "task = \"regression\") or store one class index per sample"
        )
    if labels.shape != (n,):
        raise DataError(f"labels must be {n} integers, got {labels.dtype} of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(
            f"labels range {int(labels.min())}..{int(labels.max())} but model output {output!r} "
            f"scores {classes} classes (0..{classes - 1}); use data that matches the model"
        )
    return labels.astype(np.int64)


def evaluate_accuracy(
    session: Session,
    io: ModelIO,
    x: Feeds | np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 256,
    num_classes: int | None = None,
) -> AccuracyResult:
    """Run a classifier and score it against labels.

    Args:
        session: The model's session.
        io: Its inputs and scored output (:func:`~onnxopt.runtime.io.model_io`).
        x: Feeds, or one feature array for a one-input model.
        labels: One integer label per sample.
        batch_size: Samples per run (ignored for a fixed-batch model).
        num_classes: The dataset's class count; the output must score at least this many.

    Raises:
        DataError: When labels or the class count do not fit the output.
        EvaluationError: When the runtime fails or the output is NaN/Inf.
    """
    scores = predict_scores(session, io, x, batch_size=batch_size)
    check_class_count(scores, num_classes, io.output_name)
    return classification_metrics(scores, labels, output=io.output_name)


def check_class_count(scores: np.ndarray, num_classes: int | None, output: str) -> None:
    """The output must score every class the data have (it may score more: a class missing
    from the data is fine).

    Raises:
        DataError: When the data have more classes than the output scores.
    """
    width = 2 if scores.ndim == 1 or scores.shape[-1] == 1 else scores.shape[-1]
    if num_classes is not None and num_classes > width:
        raise DataError(
            f"model output {output!r} scores {width} classes but the dataset has "
            f"{num_classes}; use data that matches the model (an .npz's class_names sets the "
            "class count)"
        )
