# The two set-up commands of the README. Both install first, so each works on a fresh machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
RUN_DIR ?= runs/demo

.PHONY: install demo test lint

install:
	$(PIP) install --quiet -e '.[dev]'

demo: install
	$(PYTHON) -m onnxopt train digits-mlp --data digits -o $(RUN_DIR)/digits-mlp.pt
	$(PYTHON) -m onnxopt export --weights $(RUN_DIR)/digits-mlp.pt -o $(RUN_DIR)/digits-mlp.onnx
	$(PYTHON) -m onnxopt evaluate $(RUN_DIR)/digits-mlp.onnx --data digits --split test
	$(PYTHON) -m onnxopt quantize $(RUN_DIR)/digits-mlp.onnx --config configs/quantize-int8.toml -o $(RUN_DIR)/digits-mlp.int8.onnx
	$(PYTHON) -m onnxopt evaluate $(RUN_DIR)/digits-mlp.int8.onnx --data digits --split test

test: install
	$(PYTHON) -m pytest -q -p no:cacheprovider

lint:
	$(PYTHON) -m ruff check onnxopt tests benchmarks
