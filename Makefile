# `make run` and `make test` work on a fresh machine with Python 3.11 and pip only.
PYTHON ?= python3.11
VENV ?= .venv
# CPU wheel by default. GPU users: install a CUDA build of torch into .venv first, then
# `make run TORCH_SPEC=` (empty) so the Makefile leaves it alone.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.wanflash-installed

.PHONY: setup run test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/pip install -q -e ".[engine,test,s3]"
	@touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/wanflash serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000} --data-dir $${DATA_DIR:-./.wanflash} --print-key

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .wanflash
