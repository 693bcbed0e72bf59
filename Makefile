# Two commands do everything: `make run` (set up, pull the data, reproduce the pipeline)
# and `make test` (set up, run the test suite). Both create and reuse .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# DVC stages call `mlops`, so the venv's commands come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
TORCH_VERSION ?= 2.13.0
# Empty here (pip finds the CPU wheel on its own); CI on GitHub sets the PyTorch CPU wheel index.
TORCH_INDEX_URL ?=

export HF_HUB_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export OMP_NUM_THREADS ?= 1

.PHONY: install run test test-quick mutation lint system-deps clean

$(BIN)/mlops: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/mlops

run: install
	$(BIN)/dvc pull data.dvc
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

# Prometheus, Alertmanager and PostgreSQL for the end-to-end tests (Debian packages; needs root or sudo).
system-deps:
	@bash .ci/system-deps

test: install system-deps
	$(BIN)/dvc pull -q data.dvc
	$(BIN)/pytest

# Everything but the heaviest tests (container builds, workflows under act, multi-process training).
test-quick: install system-deps
	$(BIN)/dvc pull -q data.dvc
	$(BIN)/pytest -m "not heavy"

# Mutation testing of the decision code (mutmut; minutes, so not part of `make test`): every mutant of the
# gate, router, promotion and rollback, canary verdict, regression flags and params validation must be killed
# by the fast unit tests ([tool.mutmut] in pyproject.toml), or be explained in tests/mutation-baseline.txt.
mutation: install
	rm -rf mutants
	$(BIN)/mutmut run
	$(BIN)/python tests/mutation_score.py

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) models mlflow.db mlruns mlartifacts wandb report mutants
