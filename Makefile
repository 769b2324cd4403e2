# The same commands run locally and in CI.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install up test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Orchestra needs Python 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

up: install
	$(BIN)/orchestra up --host 127.0.0.1 --port $${PORT:-8000}

test: install
	$(BIN)/python -m pytest -n $${TEST_PROCESSES:-2} --dist loadgroup --durations=15

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/scheduling.py
	$(BIN)/python bench/pages.py
	$(BIN)/python bench/event_latency.py
	$(BIN)/python bench/connections.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
