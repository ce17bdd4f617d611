# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
# The benchmarks run apilake as a user installs it (plus the bench tools), not from the test venv:
# selenium there brings trio, which httpcore then imports in every apilake process (~0.1 s).
BENCH_VENV ?= .venv-bench

.PHONY: demo test bench docs

# $(call venv,FOLDER,EXTRA): a venv with apilake (editable) and one of its extras.
define venv
$(PYTHON) -m venv $(1)
$(1)/bin/pip install --quiet --upgrade pip
$(1)/bin/pip install --quiet -e '.[$(2)]'
touch $(1)/.installed
endef

$(VENV)/.installed: pyproject.toml
	$(call venv,$(VENV),test)

demo: $(VENV)/.installed
	$(VENV)/bin/apilake demo

test: $(VENV)/.installed
	$(VENV)/bin/pytest

# The manual (docs/, mkdocs.yml), built strictly: a broken link or anchor fails the build.
$(VENV)/.docs-installed: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[test,docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(VENV)/bin/mkdocs build --strict  # not --quiet: it hides the warnings that --strict counts

$(BENCH_VENV)/.installed: pyproject.toml
	$(call venv,$(BENCH_VENV),bench)

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python bench/run.py
	$(BENCH_VENV)/bin/python bench/tables.py
