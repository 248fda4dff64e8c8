# Dockyard: `make serve` and `make test` are all a fresh Debian machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
NPM_DIR := tests/npm

.PHONY: serve test setup lint typecheck pytest sandbox-image conformance bench bench-sandbox clean

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

pytest: sandbox-image
	$(BIN)/pytest $(PYTEST_ARGS)

# The sandbox server's docker backend needs dockerd and the locally built image (no registry here). Starts
# dockerd if it is installed but stopped, then builds the image if missing (~40 s once, cached after).
# Without docker, the docker tests skip with a reason -- except in CI (CI=true), where that is an error.
sandbox-image:
	@status=0; bash scripts/start-dockerd.sh || status=$$?; \
	if [ $$status -eq 0 ]; then bash scripts/build-sandbox-image.sh; \
	elif [ -n "$${CI:-}" ]; then echo "make sandbox-image: CI=$$CI and docker does not work (status $$status, above): failing" >&2; exit 1; \
	else echo "make sandbox-image: docker unavailable; the sandbox's docker backend tests will skip" >&2; fi

conformance: setup
	$(BIN)/pytest tests/conformance -v

bench: setup
	$(BIN)/python -m bench.federation

bench-sandbox: setup sandbox-image
	$(BIN)/python -m bench.sandbox

clean:
	rm -rf $(VENV) $(NPM_DIR)/node_modules .dockyard .pytest_cache
