# The two commands: `make setup` (once, on a fresh machine) and `make test`.
PY ?= .venv/bin/python
EDGE_TEST_DATA ?= $(abspath ../shared/data)
export EDGE_TEST_DATA

.PHONY: setup test lint typecheck unit bench model

setup:
	bash scripts/setup.sh

test: lint typecheck unit

lint:
	$(PY) -m ruff check edge tests scripts

typecheck:
	$(PY) -m mypy

unit:
	$(PY) -m pytest -q

bench:
	$(PY) scripts/bench_recognition.py

model:
	bash scripts/build_model.sh
