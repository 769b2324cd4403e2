# The same commands run locally and in CI.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.dev-installed-stamp
PIP := $(BIN)/python -m pip --disable-pip-version-check --no-input

.PHONY: install install-dev up test lint format bench bench-more clean

# What serving needs, and nothing else: `make up` installs this. pip's own lines (Collecting,
# Installing...) are the progress: a first install takes a minute or two.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Orchestra needs Python 3.11"'
	@test -x $(BIN)/python || { echo "==> Creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> Installing what serving needs into $(VENV) (first time: a minute or two)"
	@$(PIP) install --quiet --upgrade pip
	@$(PIP) install --progress-bar on -e . | grep -v '^Requirement already satisfied' || true
	@$(BIN)/python -c 'import orchestra, daphne, django' || { echo "The install failed: see above."; exit 1; }
	@touch $(STAMP)
	@echo "==> Installed."

# The test and lint tools (pytest, ruff, import-linter, Playwright) on top: `make test` and
# `make lint` install these; serving never needs them.
$(DEV_STAMP): $(STAMP)
	@echo "==> Installing the test and lint tools into $(VENV)"
	@$(PIP) install --progress-bar on -e ".[dev]" | grep -v '^Requirement already satisfied' || true
	@$(BIN)/python -c 'import pytest, ruff' || { echo "The install failed: see above."; exit 1; }
	@touch $(DEV_STAMP)

install: $(STAMP)

install-dev: $(DEV_STAMP)

up: install
	$(BIN)/orchestra up --host 127.0.0.1 --port $${PORT:-8000}

test: install-dev
	$(BIN)/python -m pytest -n $${TEST_PROCESSES:-2} --durations=10 --ignore=tests/integration
	$(BIN)/python -m pytest --durations=5 tests/integration

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The four plan shapes, embedded and split, beside LangGraph, with the per-step counts and the
# scale checks; BENCH_ARGS adds options (e.g. --check, --repeat 7). About 15 to 20 minutes.
bench: install-dev
	$(PIP) install --quiet -e ".[bench]"
	$(BIN)/python bench/scheduling.py --scale $(BENCH_ARGS)

# The dashboard over a big history, event latency, connections under load, a model call's CPU.
bench-more: install-dev
	$(BIN)/python bench/pages.py
	$(BIN)/python bench/event_latency.py
	$(BIN)/python bench/connections.py
	$(BIN)/python bench/model_calls.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
