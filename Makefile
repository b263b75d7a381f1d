# ffrep: `make demo` reproduces the headline result on real Fashion-MNIST,
# `make test` runs the test suite. Both create .venv when it is missing.

VENV ?= .venv
PYTHON ?= python3
CORES ?= 2
FASHION_MNIST_DEBIAN := /usr/share/datasets/fashion-mnist
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: venv test demo lint format bench clean-results

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
demo: venv
	@if [ ! -d $(FASHION_MNIST_DEBIAN) ] && [ ! -d resources/data/FashionMNIST/raw ] \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y -qq dataset-fashion-mnist || true; fi
	@if [ -d $(FASHION_MNIST_DEBIAN) ]; then \
	  set -- --config "data={local_raw: {fashion_mnist: $(FASHION_MNIST_DEBIAN)}}"; fi; \
	set -x; $(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml "$$@"
	$(BIN)/ffrep summary results/tables/sparsity_summary.csv

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
