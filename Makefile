# `make run` and `make test` work on a fresh machine with Python 3.11 and pip only.
PYTHON ?= python3.11
VENV ?= .venv
# CPU wheel by default. GPU users: install a CUDA build of torch into .venv first, then
# `make run TORCH_SPEC=` (empty) so the Makefile leaves it alone.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.wanflash-installed

.PHONY: setup run test check clean postgres browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/pip install -q -e ".[engine,postgres,s3,test]"
	# The official Wan2.2 code: the S2V parity tests' reference; its declared deps (flash_attn, ...) are not needed.
	$(BIN)/pip install -q --no-deps wan22==2.2.11
	@touch $(STAMP)

setup: $(STAMP)

# The playground (web page at /) is on in `make run`; WANFLASH_PLAYGROUND=0 make run turns it off.
run: $(STAMP)
	WANFLASH_PLAYGROUND=$${WANFLASH_PLAYGROUND:-1} $(BIN)/wanflash serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000} --data-dir $${DATA_DIR:-./.wanflash} --print-key

# PostgreSQL server binaries for the distributed-mode tests (they start a throwaway server with
# initdb on loopback). Debian's package when missing and we are root; otherwise those tests skip
# (and fail under CI, which must run them).
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing the PostgreSQL server (apt-get install postgresql)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    postgresql >/dev/null || echo "PostgreSQL could not be installed: its tests will skip (fail under CI)"; \
	else echo "no PostgreSQL server and no root apt-get: its tests will skip (fail under CI)"; fi

# Static checks: ruff (lint + import order), mypy (the packages that do not import torch) and
# import-linter (the layering contracts in pyproject.toml). `make test` runs them first.
check: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(STAMP) postgres browser check
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Debian's chromium for the playground's browser test (needs root; the test skips without it,
# and fails when CI is set).
browser:
	@command -v chromium >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium; } \
	  || echo "could not install chromium: the playground browser test will skip (or fail under CI)"

clean:
	rm -rf $(VENV) .wanflash
