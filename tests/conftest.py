"""Shared fixtures: a throwaway copy of this repository with tiny params, run for real with dvc and mlflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from needs import need
from servers import mlflow_server_url, postgres_url  # noqa: F401  (session fixtures: real PostgreSQL, mlflow server)

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Libraries that phone home stall without a network; tests never need one.
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)

TINY = {
    "data": {"max_rows": 600},
    # Trained from scratch unless a test says otherwise: the pretrain stage still runs, on tiny settings.
    "model": {
        "pretrained": None,
        "vocab_size": 400,
        "max_length": 32,
        "hidden_size": 32,
        "num_heads": 2,
        "intermediate_size": 64,
        "ngram_buckets": 4096,
    },
    "pretrain": {"epochs": 1, "batch_size": 32},
    "train": {"epochs": 2, "batch_size": 32, "progress_bar": False},
    # A tiny model may learn nothing: the tests of the machinery still run it through, warned.
    "evaluate": {"latency_requests": 20, "fail_without_skill": False},
    "gate": {
        "minimum": {"accuracy": 0.0, "macro_f1": 0.0, "accuracy_over_majority": -1.0},
        "maximum": {"model_size_mb": 50.0, "latency_p95_ms": 1000.0},
        "max_regression": {"accuracy": 0.5, "macro_f1": 0.5},
    },
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.needs(...)``: fail under CI, or skip naming the install command, when a need is missing."""
    for marker in item.iter_markers("needs"):
        for name in marker.args:
            need(name)


@pytest.fixture(autouse=True)
def _isolated_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI: keep one test's store out of the next.

    Removed again after the test: monkeypatch restores only what was set before, and a module fixture
    set up before the next test would otherwise track into this test's store.
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    if "mlflow" in sys.modules:  # its in-process URI outranks the variable: forget it too
        sys.modules["mlflow"].set_tracking_uri(None)
    forget_mlflow_stores()
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def forget_mlflow_stores() -> None:
    """MLflow caches stores and engines by URI: a relative sqlite:///mlflow.db would reach the last test's file."""
    if sqlalchemy_store := sys.modules.get("mlflow.store.tracking.sqlalchemy_store"):
        sqlalchemy_store.SqlAlchemyStore._engine_map.clear()
    if tracking_stores := sys.modules.get("mlflow.tracking._tracking_service.registry"):
        tracking_stores.TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    if registry_stores := sys.modules.get("mlflow.tracking._model_registry.registry"):
        registry_stores.ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()


def merge(base: dict, overrides: dict) -> dict:
    """A deep copy of ``base`` with ``overrides`` applied section by section."""
    merged = dict(base)
    for key, value in overrides.items():
        merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def tiny_params(**overrides: dict) -> dict:
    """The repository's params.yaml shrunk to run in seconds, with optional further overrides."""
    return merge(merge(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), TINY), overrides)


def write_params(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run(command: list[str], cwd: Path, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when it fails and ``check`` is set."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def git(project: Path, *args: str) -> str:
    return run(["git", *args], project).stdout.strip()


def copy_repository(target: Path) -> Path:
    """A fresh git repository holding this checkout's files as they are now (committed or not)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)
    git(target, "init", "-q", "-b", "main")
    git(target, "add", "-A")
    git(target, "commit", "-q", "-m", "template")
    return target


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository with tiny params, data pulled and `dvc repro` done, committed on main.

    Shared by every test that needs a trained model: treat it as read-only (copy it to change it).
    """
    project = copy_repository(tmp_path_factory.mktemp("pipeline") / "project")
    write_params(project, tiny_params())
    run(["dvc", "pull", "-q", "data.dvc"], project)
    run(["dvc", "repro", "-q"], project)
    run(["dvc", "push", "-q", "pretrain"], project)  # as a forker must: the workflows pull the encoder
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "tiny pipeline run")
    return project
