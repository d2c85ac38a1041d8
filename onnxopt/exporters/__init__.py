"""torch -> ONNX export (checked against torch) and graph preparation."""
