# The two commands of the README: `make demo` and `make test`. Each builds what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,render,jupyter]'
	touch $@

system-deps:
	@scripts/system-deps.sh

demo: $(STAMP) system-deps
	$(BIN)/paraconnect demo --headless --out paraconnect-demo.png

lint: $(STAMP)
	$(BIN)/ruff check paraconnect tests benchmarks
	$(BIN)/ruff format --check paraconnect tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) system-deps
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/pki.py
	$(BIN)/python benchmarks/render.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
