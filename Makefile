# Dockyard: `make serve` and `make test` are all a fresh Debian machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM_DIR := tests/npm

.PHONY: serve test setup lint typecheck pytest conformance bench clean

serve: setup
	$(BIN)/dockyard serve $(ARGS)

test: setup lint typecheck pytest

setup: $(VENV)/.installed $(NPM_DIR)/node_modules/.installed

$(VENV)/.installed: pyproject.toml constraints.txt scripts/setup-system.sh
	bash scripts/setup-system.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

$(NPM_DIR)/node_modules/.installed: $(NPM_DIR)/package.json scripts/setup-system.sh
	bash scripts/setup-system.sh
	cd $(NPM_DIR) && npm install --no-audit --no-fund --no-package-lock --loglevel=error
	touch $@

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/pyright

pytest:
	$(BIN)/pytest $(PYTEST_ARGS)

conformance: setup
	$(BIN)/pytest tests/conformance -v

bench: setup
	$(BIN)/python -m bench.federation

clean:
	rm -rf $(VENV) $(NPM_DIR)/node_modules .dockyard .pytest_cache
