# Quick start:  make demo   (compile the bundled examples: a torch module, then an ONNX file with the CLI)
#               make test   (the test suite; what CI runs)
# Both create .venv and install what they need on first use.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch; override e.g. TORCH_SPEC="torch>=2.5" to use another.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.effc-installed
PYTEST_ARGS ?=

.PHONY: demo test test-fast clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py
	$(BIN)/effc compile examples/smallnet.onnx -o build/smallnet --force
	$(BIN)/effc check examples/smallnet.onnx --against onnxruntime --dim batch=4
	$(BIN)/effc bench examples/smallnet.onnx --dim batch=4

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info build
