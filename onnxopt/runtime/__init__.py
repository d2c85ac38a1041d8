"""The runtime boundary: onnxruntime (and other backends) sessions, and what the CPU runs."""
