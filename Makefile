# hanode — every target does its own set-up from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all setup test unit e2e lint typecheck demo bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check hanode tests bench
	$(BIN)/ruff format --check hanode tests bench

typecheck: $(STAMP)
	$(BIN)/mypy hanode

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit $(PYTEST_ARGS)

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e $(PYTEST_ARGS)

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q tests $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/hanode demo

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
