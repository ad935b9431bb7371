# Two commands do all set-up on a fresh machine:
#   make demo   -- creates .venv from pyproject.toml, installs the data, runs scripts/demo.py
#   make test   -- same set-up, then runs the test suite
# and one more regenerates docs/BENCHMARKS.md (installs the optional engines, runs the benchmarks):
#   make benchmarks
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data demo test benchmarks clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (no downloads at run time).
data: $(FASHION_MNIST)

$(FASHION_MNIST):
	$(if $(shell command -v sudo),sudo,) apt-get install -y -q dataset-fashion-mnist || \
	  ( $(if $(shell command -v sudo),sudo,) apt-get update -q && $(if $(shell command -v sudo),sudo,) apt-get install -y -q dataset-fashion-mnist )

demo: setup
	$(PY) scripts/demo.py

# Two pytest workers (pytest-xdist), each taking whole test files so that a file's module fixtures
# (the benchmark smoke run, compiled models) are built once. On a 2-core Zen 3 VM (2026-12-03, clean
# clone, 204 tests): 856 s in one process, 531 s with two; most tests spend their time in
# single-threaded LLVM code generation or in worker processes that start Python, torch and TVM.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile tests

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

# Pause other CPU jobs first (see /tmp/tvm_dual_jobs/*.pid): timings are only as quiet as the machine.
benchmarks: setup $(VENV)/.installed-bench
	$(VENV)/bin/tvm-dual bench --docs $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
