"""Experiment tracking: MLflow always (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI says otherwise),
Weights & Biases as well when params.yaml switches it on."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
import pandas as pd
import requests
import yaml
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

import mlops
from mlops import pyfunc
from mlops.config import Params, TrackingParams, flatten
from mlops.errors import MlopsError
from mlops.pyfunc import TEXT_COLUMN
from mlops.registry import store

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
MODEL_ARTIFACT = "model"
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", TEXT_COLUMN)]),
    outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
)
# What the logged model needs at load time; mlops itself travels inside the model as code.
INFERENCE_PACKAGES = ["mlflow", "torch", "transformers", "tokenizers", "numpy", "pandas", "pydantic", "pyyaml"]


class TrackingError(MlopsError):
    """The tracking server or store cannot be used."""


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    model_uri: str
    tracking_uri: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def connect() -> str:
    """Point MLflow at the tracking store and fail early, in one line, when it cannot be reached."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        # MLflow retries a dead server with backoff for minutes; one short probe answers at once.
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5)
        except requests.RequestException as error:
            raise TrackingError(
                f"cannot reach the MLflow tracking server {uri} ({type(error).__name__}): "
                "start the server or fix MLFLOW_TRACKING_URI"
            ) from None
    mlflow.set_tracking_uri(uri)
    store.prepare(uri)
    try:
        mlflow.search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many types for one cause: the store is unusable
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrackingError(
            f"cannot reach the MLflow tracking store {uri} ({reason[:200]}): "
            "start the server or fix MLFLOW_TRACKING_URI"
        ) from None
    return uri


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def data_version(dvc_file: Path = Path("data.dvc")) -> str:
    """The md5 DVC recorded for the data: which data a model saw."""
    try:
        return str(yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return "unknown"


def _requirements() -> list[str]:
    pins = []
    for package in INFERENCE_PACKAGES:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            pins.append(package)
    return pins


@contextlib.contextmanager
def _wandb_run(settings: TrackingParams, run_id: str, config: dict | None = None) -> Iterator[object | None]:
    """A W&B run sharing the MLflow run's id; offline unless WANDB_MODE says otherwise."""
    if not settings.wandb:
        yield None
        return
    try:
        import wandb
    except ImportError:
        raise TrackingError("tracking.wandb is on but wandb is not installed: pip install -e '.[wandb]'") from None
    run = wandb.init(
        project=settings.wandb_project,
        id=run_id,
        resume="allow",
        mode=os.environ.get("WANDB_MODE", "offline"),
        config=config,
    )
    try:
        yield run
    finally:
        run.finish()


def log_training(params: Params, history: list[dict[str, float]], model_dir: Path, examples: list[str]) -> RunInfo:
    """One MLflow run: params, lineage tags, per-epoch metrics and the model as a pyfunc."""
    uri = connect()
    location = store.artifact_location(uri)  # a sqlite store keeps its artifacts beside it, in mlartifacts/
    if location is not None and mlflow.get_experiment_by_name(params.tracking.experiment) is None:
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # another process created it meanwhile
            mlflow.create_experiment(params.tracking.experiment, artifact_location=location)
    mlflow.set_experiment(params.tracking.experiment)
    flat_params = flatten(params)
    with mlflow.start_run() as run:
        mlflow.log_params(flat_params)
        mlflow.set_tags(
            {"mlflow.source.git.commit": git_commit(), "git_commit": git_commit(), "data_version": data_version()}
        )
        for row in history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
        logged = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=pyfunc.__file__,
            artifacts={"model": str(model_dir)},
            code_paths=[str(Path(mlops.__file__).parent)],
            signature=SIGNATURE,
            input_example=pd.DataFrame({TEXT_COLUMN: examples}),
            pip_requirements=_requirements(),
        )
        with _wandb_run(params.tracking, run.info.run_id, flat_params) as wandb_run:
            if wandb_run is not None:
                for row in history:
                    wandb_run.log({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))
    return RunInfo(run.info.run_id, run.info.experiment_id, logged.model_uri, uri)


def log_evaluation(params: Params, run_id: str, metrics: dict[str, float], evaluate_dir: Path) -> bool:
    """Add the evaluation to the training run; False (with nothing logged) when that run is not in this store."""
    connect()
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(evaluate_dir), artifact_path="evaluate")
    with _wandb_run(params.tracking, run_id) as wandb_run:
        if wandb_run is not None:
            wandb_run.summary.update(metrics)
    return True
