"""onnxopt: export, rewrite, measure and search ONNX models for edge runtimes."""

__version__ = "0.1.0"
