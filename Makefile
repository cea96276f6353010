# Two entry points, as the README says: `make demo` and `make test`. Both set up what they need.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint unit bench

# A virtualenv with the package (editable) and its dev tools; redone when pyproject changes.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/mxsandbox run scenarios/primary-down.yaml

lint: setup
	$(VENV)/bin/ruff check sandbox tests bench
	$(VENV)/bin/ruff format --check sandbox tests bench
	$(VENV)/bin/mypy

test: lint
	$(PYTHON) -m pytest -n 2 -q

unit: setup
	$(PYTHON) -m pytest -q tests/unit
