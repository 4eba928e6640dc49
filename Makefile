# Stellarscope: `make serve` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PORT ?= 5006
ADDRESS ?= 127.0.0.1
# The CPU wheel of torch 2.13.0 lies on this machine's disk; GPU users may set TORCH_SPEC.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP_RUN := $(VENV)/.stamp-run
STAMP_TEST := $(VENV)/.stamp-test
PYTEST_ARGS ?=

.PHONY: serve test lint demo bench clean-venv help

help:
	@echo "make serve  - set up, build the demo (mock survey + models) and serve the app on http://$(ADDRESS):$(PORT)"
	@echo "make test   - set up (with test extras and Debian chromium) and run the whole test suite"
	@echo "make bench  - run the benchmarks in bench/ (figures printed and written to bench/results/)"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e .
	touch $@

$(STAMP_TEST): pyproject.toml $(STAMP_RUN)
	$(PIP) install -e ".[test,bench]"
	touch $@

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing Debian chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	  else sudo apt-get update -q && sudo apt-get install -y -q chromium; fi; }

demo: $(STAMP_RUN)
	$(VENV)/bin/stellarscope demo

serve: demo
	@echo "Stellarscope will be at http://$(ADDRESS):$(PORT)/app"
	$(VENV)/bin/stellarscope serve --port $(PORT) --address $(ADDRESS)

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check core dashboard tests bench

test: $(STAMP_TEST) chromium lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP_TEST)
	for f in bench/*.py; do $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
