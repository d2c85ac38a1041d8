# The two set-up commands of the README. Both install first, so each works on a fresh machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
RUN_DIR ?= runs/demo

.PHONY: install demo test lint

# the fpga extra (hls4ml, qonnx) is installed too, so the FPGA export tests run in CI
install:
	$(PIP) install --quiet -e '.[dev,fpga,openvino]'

demo: install
	rm -rf $(RUN_DIR)
	$(PYTHON) -m onnxopt search configs/search-digits-mlp-quant-tpe.toml --run-dir $(RUN_DIR)

# .ci/chromium.sh installs headless Chromium when missing (the report's browser test)
test: install
	.ci/chromium.sh $(PYTHON) -m pytest -q -p no:cacheprovider

lint:
	$(PYTHON) -m ruff check onnxopt tests benchmarks
	$(PYTHON) -m mypy onnxopt
