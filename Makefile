# Two entry points, as the README says: `make demo` and `make test`. Both set up what they need.
VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup system demo test lint unit bench differential conformance

# A virtualenv with the package (editable) and its dev tools; redone when pyproject changes.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Debian packages some tests need (dig, Postfix, Chromium), and the three real MTAs of the
# differential tests (Exim unpacked and Haraka from npm, both into .cache/); a no-op once there.
system:
	scripts/setup-system
	scripts/setup-differential

demo: setup
	$(VENV)/bin/mxsandbox run scenarios/primary-down.yaml

lint: setup
	$(VENV)/bin/ruff check sandbox tests bench
	$(VENV)/bin/ruff format --check sandbox tests bench
	$(VENV)/bin/mypy

# The real MTAs' tests run after the rest, on their own, as they keep real time: first the
# differential tests, then the conformance runs (Postfix, Exim and Haraka side by side, each
# graded by `mxsandbox conform --smtp`; their verdicts must be those of docs/conformance/).
test: system lint
	$(PYTHON) -m pytest -n 2 -q -m "not differential and not conformance"
	$(PYTHON) -m pytest -n 2 -q -m differential
	$(PYTHON) -m pytest -q -m conformance

unit: setup
	$(PYTHON) -m pytest -q tests/unit

# Only the differential tests (root): the real Postfix, Exim and Haraka against `serve`,
# compared with `run --profile`; the tables land in out/differential/.
differential: system setup
	$(PYTHON) -m tests.differential

# The benchmarks (README, "Performance"): a table of figures beside their baselines, written
# to bench/results.json; two to four minutes on two cores.
bench: setup
	$(PYTHON) -m bench

# docs/conformance.md's table, from real runs of `mxsandbox conform`: the real MTAs (root) and
# our sender under each profile (about eight minutes).
conformance: system setup
	scripts/conformance-docs
