# Two commands do everything: `make run` (set up, pull the data, reproduce the pipeline)
# and `make test` (set up, run the test suite). Both create and reuse .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# DVC stages call `mlops`, so the venv's commands come first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
UV_VERSION ?= 0.13.9
# torch is the CPU build at the version requirements.in pins, installed apart from the lock: from TORCH_INDEX_URL
# (CI on GitHub sets the PyTorch CPU wheel index), else from the wheels folder in pip's configuration
# (find-links), where this machine keeps the CPU wheel.
TORCH_VERSION := $(shell sed -n 's/^torch==//p' requirements.in)
TORCH_INDEX_URL ?=
TORCH_SOURCE = $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),$$($(BIN)/pip config get global.find-links 2>/dev/null | sed 's/^/--find-links=/'))

export HF_HUB_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export OMP_NUM_THREADS ?= 1

.PHONY: install lock run test test-quick mutation lint system-deps clean

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)

# Installs exactly what requirements.txt locks, checking every hash; never re-resolves (that is `make lock`).
# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on this project's CI machines),
# Python would otherwise compile torch, transformers and MLflow again in every process, 10 s each.
$(BIN)/mlops: $(BIN)/uv pyproject.toml requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --compile-bytecode torch==$(TORCH_VERSION) $(TORCH_SOURCE)
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --compile-bytecode --require-hashes -r requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	$(BIN)/uv pip check --python $(BIN)/python || { echo "requirements.txt lacks what pyproject.toml needs: run make lock"; exit 1; }
	touch $@

install: $(BIN)/mlops

# Re-resolve requirements.in (the project, its dev tools, torch's version) into requirements.txt, keeping the
# versions already locked where they still fit; `make lock LOCK_FLAGS=--upgrade` takes the newest of everything.
lock: $(BIN)/uv
	$(BIN)/uv pip compile --quiet requirements.in --output-file requirements.txt $(LOCK_FLAGS)
	@! grep -q '^nvidia' requirements.txt || { echo "CUDA libraries in the lock: make the torch version in pyproject.toml's [tool.uv] metadata match requirements.in"; exit 1; }

# The pretrained encoder comes from the in-repo remote too, so `dvc repro` fine-tunes without pretraining again.
run: install
	$(BIN)/dvc pull data.dvc pretrain
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
# Only the scored functions' mutants run (tests/mutation_score.py --names); mutmut lists each one's result.
mutation: install
	rm -rf mutants
	$(BIN)/python tests/mutation_score.py --names | xargs $(BIN)/mutmut run
	$(BIN)/python tests/mutation_score.py

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) models mlflow.db mlruns mlartifacts wandb report mutants
