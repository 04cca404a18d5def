# LEGO — the two commands a newcomer needs are `make run` and `make test`.
# Every target installs what it needs first (tools/setup-host, idempotent).

VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.lego-installed
RESULTS ?= $(CURDIR)/results
TRACE   ?=

.PHONY: all setup build test bench run stop clean lint

all: build

$(STAMP): pyproject.toml setup.py tools/setup-host $(wildcard ext/*.pyx ext/*.pxd)
	tools/setup-host
	touch $@

setup: $(STAMP)

# Rebuild the Cython kernels in place (after editing ext/*.pyx).
build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

test: build
	$(BIN)/python -m pytest -q

bench: build
	$(BIN)/python -m bench

run: build
	$(BIN)/lego run --results $(RESULTS) $(if $(TRACE),--trace $(TRACE))

lint: $(STAMP)
	$(BIN)/ruff check .

stop:
	@echo "nothing to stop yet"

clean:
	rm -rf build *.egg-info ext/*.c ext/*.so ext/*.html .pytest_cache $(RESULTS)
	find . -name __pycache__ -prune -exec rm -rf {} +
