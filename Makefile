# One command to set up and run the main job, one to set up and run the tests.
#   make run    train + evaluate the default model on bundled UMLS, print the metrics table
#   make test   the whole test suite (slow end-to-end tests in their cheap form)
#   make docs   the documentation site into site/ (warnings and broken links are errors)
# Override the torch build for a GPU machine, e.g.:  make run TORCH_SPEC="torch==2.13.0"
# (the default pins the CPU build available locally; an unpinned torch pulls CUDA wheels).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
RUN_ARGS ?= --config experiments/configs/umls_small.toml --overwrite

.PHONY: setup setup-dev setup-docs run test test-full docs bench lint clean

# the package and its required dependencies only (what `make run` needs)
setup: $(VENV)/.installed

# plus the 'dev' extra: test and lint tools, every optional feature
setup-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

# the 'docs' extra (MkDocs, mkdocstrings)
setup-docs: $(VENV)/.installed-docs

$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

run: setup
	$(BIN)/python -m disenkg.run $(RUN_ARGS)

test: setup-dev
	DISENKG_SLOW_CHEAP=1 $(BIN)/python -m pytest -q

test-full: setup-dev
	$(BIN)/python -m pytest -q -m slow

docs: setup-docs
	$(BIN)/mkdocs build --strict --site-dir site

lint: setup-dev
	$(BIN)/ruff check disenkg tests experiments

bench: setup
	$(BIN)/python experiments/bench_mixture_bce.py

clean:
	rm -rf $(VENV) runs site
