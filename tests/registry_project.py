"""Shared by the registry tests: a trained tiny project with an empty registry, new candidates on new commits."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import torch
from mlflow import MlflowClient
from transformers import AutoModelForSequenceClassification

from conftest import git, tiny_params, write_params
from mlops import paths, stages, tracking
from mlops.config import load_params

NAME = tiny_params()["tracking"]["registered_model"]
# Tight regression limits so the negated model is refused against the original.
GATE = {
    "minimum": {"accuracy": 0.0, "macro_f1": 0.0},
    "maximum": {"model_size_mb": 50.0, "latency_p95_ms": 1000.0},
    "max_regression": {"accuracy": 0.01, "macro_f1": 0.01, "log_loss": 0.05},
}


def copy_project(pipeline_project: Path, target: Path) -> Path:
    """The trained tiny project without its tracking store: each test starts from an empty registry."""
    store = shutil.ignore_patterns("mlflow.db", "mlruns", "mlartifacts")
    shutil.copytree(pipeline_project, target, ignore=store, symlinks=True)
    write_params(target, tiny_params(gate=GATE))
    git(target, "commit", "-q", "-am", "strict gate")
    return target


def negate_classifier(model_dir: Path, confidence: float = 1.0) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        model.classifier.weight.mul_(-confidence)
        model.classifier.bias.mul_(-confidence)
    model.save_pretrained(model_dir)


def new_candidate(project: Path, negate: bool = False, confidence: float = 1.0) -> str:
    """What `dvc repro` does on a new commit: a tracked training run (here the same weights, optionally
    negated) and its evaluation in the current tracking store; returns the run id."""
    params = load_params(project / "params.yaml")
    with contextlib.chdir(project):
        if negate:
            negate_classifier(paths.MODEL_DIR, confidence)
        history = json.loads(paths.HISTORY_FILE.read_text())
        logged = tracking.log_training(params, history, paths.MODEL_DIR, ["a fine film"])
        paths.RUN_FILE.write_text(json.dumps(logged.to_json()))
        stages.evaluate(params)
    git(project, "commit", "-q", "--allow-empty", "-m", "new candidate")
    return logged.run_id


def snapshot(client: MlflowClient, name: str) -> object:
    """Everything deploy could change in the registry; None only when the model does not exist."""
    try:
        model = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as error:
        if error.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise  # a broken store must fail the test, not read as "unchanged"
        return None
    found = client.search_model_versions(f"name = '{name}'")
    return dict(model.aliases), sorted((v.version, sorted(v.tags.items()), v.description) for v in found)


@contextlib.contextmanager
def inside(project: Path) -> Iterator[object]:
    """Run deploy in-process from the project directory with its params."""
    with contextlib.chdir(project):
        yield load_params(Path("params.yaml"))


def error_lines(stderr: str) -> list[str]:
    """The CLI's own error lines (libraries may log warnings to stderr as well); never a traceback."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def name_of(project: Path) -> str:
    return load_params(project / "params.yaml").tracking.registered_model
