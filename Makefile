# Two entry points (see README "Quick start"): `make demo` and `make test`.
# Each creates .venv on first use, installs the package with its extras, then runs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The data: $FACEVERIFY_DATA if set, else ../shared/data when it exists (see README "Data").
ifeq ($(FACEVERIFY_DATA),)
ifneq ($(wildcard ../shared/data/lfw),)
export FACEVERIFY_DATA := $(abspath ../shared/data)
endif
endif

.PHONY: setup demo test
setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,baselines,onnx]'
	touch $@

demo: setup
	$(BIN)/faceverify demo $(DEMO_ARGS)

test: setup
	$(BIN)/python -m pytest
