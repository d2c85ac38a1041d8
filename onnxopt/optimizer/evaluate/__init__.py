"""Evaluation stage: onnxruntime sessions, accuracy and loss, latency, size and bit width.

Importing this package does not import onnxruntime (only creating a session does) and
never imports torch.
"""

from onnxopt.data.shaping import adapt_inputs
from onnxopt.optimizer.evaluate.accuracy import (
    AccuracyResult,
    classification_metrics,
    evaluate_accuracy,
    log_probabilities,
    looks_like_probabilities,
    predict_scores,
)
from onnxopt.optimizer.evaluate.fusion import (
    INTEGER_KERNELS,
    fused_kernels,
    kernel_counts,
    optimized_graph,
)
from onnxopt.optimizer.evaluate.latency import (
    LatencyBudget,
    LatencyResult,
    LatencyStats,
    default_budget,
    measure_latency,
)
from onnxopt.optimizer.evaluate.pipeline import evaluate_model
from onnxopt.optimizer.evaluate.report import EvaluationReport
from onnxopt.optimizer.evaluate.session import (
    ClassifierIO,
    classifier_io,
    make_session,
    ort_errors,
)
from onnxopt.optimizer.evaluate.size import (
    BIT_WIDTHS_KEY,
    ParameterStats,
    TensorStat,
    parameter_stats,
    size_on_disk,
)

__all__ = [
    "INTEGER_KERNELS",
    "fused_kernels",
    "kernel_counts",
    "optimized_graph",
    "BIT_WIDTHS_KEY",
    "AccuracyResult",
    "ClassifierIO",
    "EvaluationReport",
    "LatencyBudget",
    "LatencyResult",
    "LatencyStats",
    "ParameterStats",
    "TensorStat",
    "adapt_inputs",
    "classification_metrics",
    "classifier_io",
    "default_budget",
    "evaluate_accuracy",
    "evaluate_model",
    "log_probabilities",
    "looks_like_probabilities",
    "make_session",
    "measure_latency",
    "ort_errors",
    "parameter_stats",
    "predict_scores",
    "size_on_disk",
]
