# gpuops: `make run` runs the main job on embedded defaults, `make test` runs the tests.
# Both set up what they need: a .venv (with torch), and for the tests Debian packages via apt.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch build to install. On this project's machines pip finds the CPU wheel on disk;
# elsewhere pip takes the matching build from PyPI.
TORCH_SPEC ?= torch==2.13.0
STAMP  := $(VENV)/.gpuops-installed
# the optional Ray extra (--target ray, doctor --cluster): make test installs it, make run does not
RAY_STAMP := $(VENV)/.gpuops-ray-installed

.PHONY: help venv run test lint bench clean

help:
	@echo "make run    doctor, then a short SRCNN training on T91/Set5 logged to MLflow (./mlflow.db)"
	@echo "make test   lint and the whole test suite with real MLflow, Docker, moto and Chromium"
	@echo "make bench  benchmarks in bench/, results to bench/results/"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || bash scripts/apt-install.sh python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[train,docker,aws,dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/gpuops doctor || true
	$(BIN)/gpuops run experiments/quickstart.yaml --target local
	@echo "Artifacts are in $(CURDIR)/mlruns/. Open the MLflow UI on this store: $(BIN)/gpuops ui"

lint: $(STAMP)
	$(BIN)/ruff check gpuops tests bench

$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[ray]'
	@touch $(RAY_STAMP)

test: $(STAMP) $(RAY_STAMP)
	bash scripts/test-deps.sh
	$(BIN)/ruff check gpuops tests bench
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/doctor_vs_collect_env.py
	$(BIN)/python bench/train_step.py --out bench/results/train_step.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
