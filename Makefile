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

.PHONY: help venv tools lint fmt test test-slow ansible-sanity run bench clean distclean

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

# The Ansible collection's plugins are modules of the `ansible_collections` namespace
# package: mypy checks them on their own, with explicit package bases.
COLLECTIONS := clients/ansible
COLLECTION := $(COLLECTIONS)/ansible_collections/luod/liveupdate

lint: venv ## ruff check, ruff format --check, mypy, ansible-lint (the Ansible collection)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	MYPYPATH=$(COLLECTIONS) $(BIN)/mypy --explicit-package-bases $$(find $(COLLECTIONS) -name '*.py')
	cd $(COLLECTION) && PATH="$(abspath $(BIN)):$$PATH" LC_ALL=C.UTF-8 \
		ANSIBLE_HOME="$(abspath $(VENV))/ansible-home" \
		ANSIBLE_COLLECTIONS_PATH="$(abspath $(COLLECTIONS))" ansible-lint --offline -q

fmt: venv ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: tools venv lint ## what CI runs: tools, venv, lint, then the fast test suite
	$(BIN)/pytest -q

# pytest exits 5 when no test is selected; until slow tests exist that is not a failure.
test-slow: tools venv ## the long stress/soak tests (pytest -m slow)
	$(BIN)/pytest -q -m slow || test $$? -eq 5

# ansible-test builds a virtualenv per sanity test and bootstraps pip into each with a script
# it downloads from outside PyPI. Offline, a stand-in that runs ensurepip does the same job
# (pip then installs the sanity requirements from PyPI); it lives in a HOME of its own.
ansible-sanity: venv ## ansible-test sanity on the Ansible collection (not in `make test`: ~1-2 min)
	@home="$(abspath $(VENV))/ansible-test-home"; \
	pip=$$($(BIN)/python -c 'import re, ansible_test._internal.python_requirements as r; \
		print(re.search(r"pip=.([0-9.]+).", open(r.__file__).read()).group(1).replace(".", "_"))'); \
	mkdir -p "$$home/.ansible/test/cache"; \
	printf 'import ensurepip\nensurepip.bootstrap(upgrade=True)\n' \
		> "$$home/.ansible/test/cache/get_pip_$$pip.py"; \
	python=$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	cd $(COLLECTION) && HOME="$$home" LC_ALL=C.UTF-8 PATH="$(abspath $(BIN)):$$PATH" \
		ansible-test sanity --python "$$python"

run: venv ## run the daemon in the foreground: make run ARGS='--ram 8G'
	@$(BIN)/python -c 'from luod_run.build import interposer; print("luod-run:", interposer())' \
		|| echo "luod-run will not work until the interposer builds; luod runs without it"
	exec $(BIN)/luod $(ARGS)

# Each bench prints its own rows and records its ratios (bench/_summary.py record()) into one
# file; the summary table of all of them comes last. bench/vmm.py runs its --quick matrix
# unless BENCH_FULL=1.
bench: venv ## run every bench/*.py (files starting with _ are helpers), then one summary table
	@set -e; summary=$$(mktemp); trap 'rm -f "$$summary"' EXIT; \
	export LUOD_BENCH_SUMMARY="$$summary"; \
	for f in bench/*.py; do \
		case "$${f##*/}" in _*|'*.py') continue ;; esac; \
		args=; if [ "$${f##*/}" = vmm.py ] && [ "$(BENCH_FULL)" != 1 ]; then args=--quick; fi; \
		echo "== $$f $$args"; $(BIN)/python "$$f" $$args; \
	done; \
	echo "== summary"; $(BIN)/python bench/_summary.py "$$summary"

clean: ## remove build output and tool caches (keeps the venv)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +

distclean: clean ## clean, and remove the venv too
	rm -rf $(VENV)
