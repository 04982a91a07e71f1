# demandscope: `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck pytest schemas bench kafka-start kafka-stop clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("demandscope needs Python 3.11+, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create .venv with demandscope and its tools (.venv/bin/demandscope)

run: install ## Start Kafka, the three services and SQLite in the foreground (Ctrl-C stops all)
	$(BIN)/demandscope up

test: install lint typecheck pytest ## Lint, type-check and run every test on a real broker and databases

lint: install ## ruff: lint and formatting
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install ## mypy --strict
	$(BIN)/mypy shared services bench tests

pytest: install ## The test suite (starts its own Kafka and PostgreSQL)
	$(BIN)/pytest

schemas: install ## Regenerate docs/schemas/ and the README settings table
	$(BIN)/demandscope schemas export --out docs/schemas
	$(BIN)/demandscope schemas settings

bench: install ## Benchmarks, as ratios against baselines measured in the same run
	$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

kafka-start: install ## Start the local broker in the background
	$(BIN)/demandscope kafka start

kafka-stop: install ## Stop the local broker
	$(BIN)/demandscope kafka stop

clean: ## Remove .run/ (broker data, databases, models) and caches
	-$(BIN)/demandscope kafka stop 2>/dev/null
	rm -rf .run .mypy_cache .ruff_cache .pytest_cache
