# payrail: two commands set up everything on a fresh machine with Python 3.11+.
#   make run    start the whole platform locally (embedded broker and PostgreSQL by default)
#   make test   install what the tests need and run them
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-integration test-e2e test-faults lint format bench schemas install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/payrail run

# Two workers, each test file on one of them: most tests wait on the broker or the
# platform, so the suite takes about half as long on two cores.
test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/pytest -q -m integration

test-e2e: $(STAMP)
	$(BIN)/pytest -q -m e2e

# The money-safety scenarios alone, in one process, ending with their table of lost,
# doubled and stuck payments (`make test` runs them too, in its workers).
test-faults: $(STAMP)
	$(BIN)/pytest -q tests/faults

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy services schemas tests bench

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.run

schemas: $(STAMP)
	$(BIN)/payrail export-schemas

clean:
	rm -rf $(VENV) .payrail .pytest_cache .mypy_cache .ruff_cache
