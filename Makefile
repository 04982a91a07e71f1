# demandscope: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install assets setup run test lint typecheck pytest schemas bench kafka-start kafka-stop clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("demandscope needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[dev]'
	$(BIN)/python -m compileall -q shared services devstack bench
	@touch $(STAMP)

install: $(STAMP) assets ## Create .venv with demandscope and its tools (.venv/bin/demandscope)

assets: $(STAMP) ## The pages' htmx and Vega (and axe-core for tests) from npm, pinned and hash-checked
	$(BIN)/python -m devstack assets

setup: install ## Install the system packages the stack and tests need (Java, Maven, PostgreSQL, Prometheus, Chromium)
	$(BIN)/python -m devstack setup

run: install setup ## Start Kafka, the three services and SQLite, supervised, in the foreground (Ctrl-C stops all)
	$(BIN)/python -m devstack up

test: install setup lint typecheck pytest ## Lint, type-check and run every test on a real broker and databases

lint: install ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy --strict
	$(BIN)/mypy shared services devstack bench tests

pytest: install setup ## The test suite (starts its own Kafka and PostgreSQL)
	$(BIN)/pytest

schemas: install ## Regenerate docs/schemas/ and the README settings table
	$(BIN)/demandscope schemas export --out docs/schemas
	$(BIN)/demandscope schemas settings

bench: install ## Benchmarks against baselines in the same run (BENCH="intake stack" for some)
	$(BIN)/uv pip install --python $(BIN)/python --quiet --compile-bytecode -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH)

kafka-start: install ## Start the local broker in the background
	$(BIN)/python -m devstack kafka start

kafka-stop: install ## Stop the local broker
	$(BIN)/python -m devstack kafka stop

clean: ## Remove .run/ (broker data, databases, models) and caches
	-$(BIN)/python -m devstack kafka stop 2>/dev/null
	rm -rf .run .mypy_cache .ruff_cache .pytest_cache
