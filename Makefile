# The two commands of the README: `make demo` and `make test`. Each builds what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest bench system-deps clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,render,jupyter]'
	touch $@

system-deps:
	@scripts/system-deps.sh

# The C relay: pip's build hook builds it where a compiler was there already; this builds it when
# its source changes, once system-deps has brought the compiler, and fails if it cannot.
CRELAY := $(VENV)/.crelay
$(CRELAY): paraconnect/tunnel/_crelay.c hatch_build.py | $(STAMP) system-deps
	PARACONNECT_REQUIRE_C=1 $(BIN)/python hatch_build.py
	touch $@

# The JupyterLab panel. pip's build hook builds it when missing (a fresh clone); this rebuilds it
# when its sources change and reinstalls, since the editable install copies the built files.
LABEXT := paraconnect/labextension/static/style.js
$(LABEXT): $(wildcard labextension/src/*.ts labextension/style/*) labextension/package.json labextension/yarn.lock paraconnect/_version.py | $(STAMP)
	cd labextension && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm install && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm build:prod
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# configurable-http-proxy from npm, for the tests that run paraconnect under a real JupyterHub
# (tests/helpers_jupyterhub.py); jupyterhub itself is in the dev extra.
CHP := tools/jupyterhub/node_modules/.bin/configurable-http-proxy
$(CHP): tools/jupyterhub/package.json tools/jupyterhub/package-lock.json | system-deps
	cd tools/jupyterhub && npm ci --no-audit --no-fund
	touch $@

demo: $(STAMP) $(LABEXT) system-deps $(CRELAY)
	$(BIN)/paraconnect demo --headless --out paraconnect-demo.png

lint: $(STAMP)
	$(BIN)/ruff check paraconnect tests benchmarks
	$(BIN)/ruff format --check paraconnect tests benchmarks
	cd labextension && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm lint

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(LABEXT) system-deps $(CRELAY) $(CHP)
	$(BIN)/pytest

test: lint typecheck pytest

bench: $(STAMP) system-deps $(CRELAY)
	$(BIN)/python benchmarks/pki.py
	$(BIN)/python benchmarks/render.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
	rm -f paraconnect/tunnel/_crelay*.so
	rm -rf tools/jupyterhub/node_modules
	rm -rf labextension/node_modules labextension/lib labextension/tsconfig.tsbuildinfo paraconnect/labextension
