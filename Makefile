# Entry points for a fresh machine: `make demo`, `make test` and `make lint`. Each sets up .venv first.
PYTHON ?= python3
VENV ?= .venv
# The benchmarks run apilake as a user installs it (plus the bench tools), not from the test venv:
# selenium there brings trio, which httpcore then imports in every apilake process (~0.1 s).
BENCH_VENV ?= .venv-bench

.PHONY: demo test lint bench docs

comma := ,

# $(call venv,FOLDER,EXTRAS): a venv with apilake (editable) and its extras, joined by $(comma).
define venv
$(PYTHON) -m venv $(1)
$(1)/bin/pip install --quiet --upgrade pip
$(1)/bin/pip install --quiet -e '.[$(2)]'
touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml
	$(call venv,$(VENV),test$(comma)lint$(comma)docs)

demo: $(VENV)/.installed
	$(VENV)/bin/apilake demo

test: $(VENV)/.installed
	$(VENV)/bin/pytest

# ruff's lint rules and mypy --strict over src/ (configured in pyproject.toml); the format check
# compares the tree with `ruff format`.
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The manual (docs/, mkdocs.yml), built strictly: a broken link or anchor fails the build.
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict  # not --quiet: it hides the warnings that --strict counts

$(BENCH_VENV)/.installed: pyproject.toml
	$(call venv,$(BENCH_VENV),bench)

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/run.py
	$(BENCH_VENV)/bin/python bench/tables.py
