# ffrep: `make demo` reproduces the headline result on real Fashion-MNIST,
# `make test` runs the test suite. Both create .venv when it is missing.

VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
FASHION_MNIST_DEBIAN := /usr/share/datasets/fashion-mnist
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: venv test demo demo-figures demo-report lint format bench bench-quick \
	clean-results

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

test: venv
	$(BIN)/python -m pytest

# Real Fashion-MNIST: files already under resources/data, else Debian's
# dataset-fashion-mnist (installed here when we are root), else torchvision's
# download where the machine is online.
# The demo's Snakemake options; the commands that go on from its results
# (demo-figures, demo-report) must give the same ones, or Snakemake sees
# changed settings and plans the work again. Targets go before them: --config
# takes every word after it.
DEMO_ARGS = set -- --configfile config/demo.yaml; if [ -d $(FASHION_MNIST_DEBIAN) ]; \
	then set -- "$$@" --config "data={local_raw: {fashion_mnist: $(FASHION_MNIST_DEBIAN)}}"; fi

demo: venv
	@if [ ! -d $(FASHION_MNIST_DEBIAN) ] && [ ! -d resources/data/FashionMNIST/raw ] \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq dataset-fashion-mnist || true; fi
	@$(DEMO_ARGS); set -x; $(BIN)/snakemake --cores $(CORES) "$$@"
	$(BIN)/ffrep summary results/tables/sparsity_summary.csv

# redraw the demo's tables and figures from its recorded activations
demo-figures: venv
	@$(DEMO_ARGS); set -x; $(BIN)/snakemake --cores $(CORES) figures "$$@"

# the demo's figures and captions on one HTML page
demo-report: venv
	@$(DEMO_ARGS); set -x; $(BIN)/snakemake "$$@" --report results/demo-report.html

# Benchmark: side-by-side times and ratios; see "Speed" in README.md. Uses the
# demo's prepared Fashion-MNIST when it is there, synthetic data otherwise.
bench: venv
	mkdir -p results/bench
	$(BIN)/ffrep bench --svhn --csv results/bench/bench.csv \
	  $$( [ -f resources/data/prepared/fashion_mnist.pt ] && \
	      echo --data resources/data/prepared/fashion_mnist.pt )

bench-quick: venv
	$(BIN)/ffrep bench --quick

lint: venv
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/snakefmt Snakefile workflow/rules

clean-results:
	rm -rf results/runs results/activations results/tables results/figures results/checkpoints logs
