# The two commands (and the benchmarks). Each creates .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PYTEST_WORKERS ?= 2

.PHONY: demo test bench docs lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test,dev]"
	touch $@ $(VENV)/.base

$(VENV)/.bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[bench]"
	touch $@ $(VENV)/.base

## make demo: quick versions of every experiment, report in runs/demo/REPORT.md
demo: $(VENV)/.base
	$(BIN)/python -m inferax.experiments.demo --workdir=runs/demo

## make test: the whole test suite (4 virtual CPU devices, see tests/conftest.py); the
## documentation build is `make docs` (CI runs both)
test: $(VENV)/.test
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --durations=15 -m "not docs"

## make bench: speed against peers (diffrax, BlackJAX, PyTorch, penzai), table on stdout
bench: $(VENV)/.bench
	$(BIN)/python -m benchmarks.flow_sampling
	$(BIN)/python -m benchmarks.smc
	$(BIN)/python -m benchmarks.lm
	$(BIN)/python -m benchmarks.distributed
	$(BIN)/python -m benchmarks.flow_search
	$(BIN)/python -m benchmarks.lm_search
	$(BIN)/python -m benchmarks.energy
	$(BIN)/python -m benchmarks.penzai

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache

$(VENV)/.docs: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[docs]"
	touch $@ $(VENV)/.base

## make docs: the documentation site, strict build into build/site (MkDocs Material)
## (the strict build, then its checks: every public name has an anchor in the built site)
docs: $(VENV)/.docs $(VENV)/.test
	$(BIN)/python -c "import runpy; runpy.run_path('docs/hooks.py')['on_config']({})"
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_docs.py -m docs
