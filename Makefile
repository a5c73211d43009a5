# Two entry points (see README "Quick start"): `make demo` and `make test`.
# Each creates .venv on first use, installs the package with its extras, then runs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FACEVERIFY_DATA ?= $(abspath ../shared/data)

.PHONY: setup demo test
setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,baselines]'
	touch $@

demo: setup
	$(BIN)/faceverify baseline dlib --folds 1,2 --out runs/demo/dlib_folds12.npz --eval-out runs/demo/eval

test: setup
	$(BIN)/python -m pytest
