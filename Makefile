# Everything a fresh machine needs: Python 3.11 with pip. The venv is built from the lock file.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean lock

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m replay.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_sync.py

lint: $(STAMP)
	$(BIN)/ruff check recorder replay schemas tests benchmarks

# Regenerate requirements.lock after changing dependencies in pyproject.toml (needs network to PyPI).
lock:
	$(PYTHON) -m venv .lock-tools && .lock-tools/bin/pip install -q uv
	.lock-tools/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
	rm -rf .lock-tools

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
