# luod developer entry points (GNU make). `make` alone lists the targets.
#
# The virtualenv is (re)built on demand: every target that needs Python depends on a stamp
# file inside it, which is older than pyproject.toml whenever the dependencies may have
# changed. `make test` is what CI runs (.ci/run), starting from a fresh clone.

SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV ?= .venv
PYTHON ?= python3
ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed.stamp

.PHONY: help venv tools lint fmt test test-slow run bench clean distclean

help: ## list the targets
	@echo "usage: make TARGET [VENV=.venv] [ARGS='luod flags']"
	@awk 'BEGIN { FS = ":.*## " } /^[a-z-]+:.*## / { printf "  %-10s %s\n", $$1, $$2 }' \
		$(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP) ## create the venv (.venv) and install luod editable with the test extra

tools: ## install dtc (Debian device-tree-compiler) if it is missing
	@command -v dtc >/dev/null && exit 0; \
	echo "installing device-tree-compiler (for dtc)"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -qq device-tree-compiler >/dev/null 2>&1 \
		|| { apt-get update -qq && apt-get install -y -qq device-tree-compiler >/dev/null; }; \
	command -v dtc >/dev/null

lint: venv ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: tools venv lint ## what CI runs: tools, venv, lint, then the fast test suite
	$(BIN)/pytest -q

# pytest exits 5 when no test is selected; until slow tests exist that is not a failure.
test-slow: tools venv ## the long stress/soak tests (pytest -m slow)
	$(BIN)/pytest -q -m slow || test $$? -eq 5

run: venv ## run the daemon in the foreground: make run ARGS='--ram 8G'
	@$(BIN)/python -c 'from luod_run.build import interposer; print("luod-run:", interposer())' \
		|| echo "luod-run will not work until the interposer builds; luod runs without it"
	exec $(BIN)/luod $(ARGS)

bench: venv ## run every bench/*.py (files starting with _ are helpers)
	@set -e; for f in bench/*.py; do \
		case "$${f##*/}" in _*|'*.py') continue ;; esac; \
		echo "== $$f"; $(BIN)/python "$$f"; \
	done

clean: ## remove build output and tool caches (keeps the venv)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean ## clean, and remove the venv too
	rm -rf $(VENV)
