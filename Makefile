# Two commands for a newcomer (README): `make repro` and `make test`.
# Both create the environment (.venv, pinned requirements, the package in editable mode) when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup repro test lint format report clean-venv

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

# DVC's plot pages draw offline: a template with the Vega libraries inline, set in this clone's .dvc/config.local
OFFLINE_TEMPLATE := .dvc/plots/offline.html
$(OFFLINE_TEMPLATE): $(STAMP)
	$(BIN)/python -m adaptive_lr.report html-template -o $@
	$(BIN)/dvc config --local plots.html_template plots/offline.html

setup: $(STAMP) $(if $(wildcard .dvc),$(OFFLINE_TEMPLATE))

# The whole default pipeline (3 tasks x 8 schedules x 5 LR multipliers x 3-5 seeds, + 3 ablations) on the offline stand-ins:
# about 78 min on a 2-core AVX2 CPU, every run trained (README "Results" and "The 45-minute bound").
repro: setup
	@git rev-parse --verify HEAD >/dev/null 2>&1 || { echo "error: dvc needs a git repository with at least one commit (git init && git commit)"; exit 1; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# Format and lint checks (ruff, pinned), then the test suite, the end-to-end `dvc repro` of a tiny
# profile included. The fast tier for the inner loop: make test PYTEST_ARGS='-m "not slow"'.
test: setup lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# Rewrite the code in the project's format and apply the safe lint fixes.
format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# CI's report, in the style of a pull-request comment: `dvc metrics diff` / `dvc params diff`
# against main (BASE=...), the headline table, `dvc plots diff` against it as PNGs (plots-diff/) and the
# comparison PNGs, into report.md.
BASE ?=
report: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m adaptive_lr.report ci $(if $(BASE),--base $(BASE)) --plots-diff plots-diff -o report.md

clean-venv:
	rm -rf $(VENV)
