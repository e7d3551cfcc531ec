# The two entry points of the README: `make demo` (the main job, offline) and `make test` (the full test suite).
# The virtual environment lives outside the clone, keyed by this checkout's path and the requirement files, so a
# re-run reuses it (~seconds) and a change of requirements builds a fresh one. torch is pinned by constraints.txt:
# without it pip would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV_KEY := $(shell (cat constraints.txt setup.cfg pyproject.toml; echo "$(CURDIR)") | sha256sum | cut -c1-16)
VENV ?= $(HOME)/.cache/hyena-hf/venv-$(VENV_KEY)
PIP := $(VENV)/bin/pip --disable-pip-version-check
SHELL := /bin/bash

.PHONY: install lint test demo bench clean-venv

$(VENV)/.installed: constraints.txt setup.cfg pyproject.toml
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# ruff (configured in pyproject.toml): lint and formatting, checked before every test run.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Triton kernels are tested on CPU by its interpreter (must be set before the kernels are imported).
test: lint
	TRITON_INTERPRET=1 $(VENV)/bin/python -m pytest -q tests

demo: install
	$(VENV)/bin/hyena-hf demo

clean-venv:
	rm -rf $(VENV)
