"""Evaluation stage: the measurement pipeline (accuracy and loss, latency, size, bit width)
on any registered runtime, and the fixed-point verification.

Importing this package does not import onnxruntime (only loading a model does) and never
imports torch.
"""

from onnxopt.optimizer.evaluate.accuracy import (
    AccuracyResult,
    classification_metrics,
    evaluate_accuracy,
    log_probabilities,
    looks_like_probabilities,
    predict_scores,
)
from onnxopt.optimizer.evaluate.latency import (
    LatencyBudget,
    LatencyResult,
    LatencyStats,
    default_budget,
    measure_latency,
)
from onnxopt.optimizer.evaluate.measure import LatencyPlan, Measurement, Measurer
from onnxopt.optimizer.evaluate.pipeline import evaluate_model
from onnxopt.optimizer.evaluate.report import EvaluationReport
from onnxopt.optimizer.evaluate.size import (
    ParameterStats,
    TensorStat,
    parameter_stats,
    size_on_disk,
)

__all__ = [
    "AccuracyResult",
    "EvaluationReport",
    "LatencyBudget",
    "LatencyPlan",
    "LatencyResult",
    "LatencyStats",
    "Measurement",
    "Measurer",
    "ParameterStats",
    "TensorStat",
    "classification_metrics",
    "default_budget",
    "evaluate_accuracy",
    "evaluate_model",
    "log_probabilities",
    "looks_like_probabilities",
    "measure_latency",
    "parameter_stats",
    "predict_scores",
    "size_on_disk",
]
