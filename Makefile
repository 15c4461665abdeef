# `make demo` and `make test` work on a fresh machine: they create .venv, install, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch first, pinned to a release that this machine (and CI) has on disk; override with `make test TORCH=...`.
TORCH  ?= torch==2.13.*
EXTRAS ?= tune,track,server,onnx,dev
# Tests and the demo read the standard data sets from ../shared/datasets when it exists.
SHARED_DATA := $(abspath ../shared/datasets)
export FGDSR_DATA_ROOT ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),$(CURDIR)/datasets)
export MPLBACKEND := Agg

.PHONY: demo test test-load lint format bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/fgdsr pipeline --out runs/demo

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -m "not load" tests

# The 16-trial load tests against PostgreSQL and sqlite (about 6 minutes on 2 cores; docs/RELIABILITY.md):
# outside `make test` so that CI's suite stays within its ~15-minute budget.
test-load: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m load tests

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(BIN)/.installed
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) runs *.egg-info
