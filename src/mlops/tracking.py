"""Experiment tracking: MLflow always (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI says otherwise),
Weights & Biases as well when params.yaml switches it on."""

from __future__ import annotations

import contextlib
import os
import re
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


# A dead or overloaded server costs at most about 3 tries x 30 s, with 1 s and 2 s pauses (MLflow's own
# defaults retry for minutes); the variables, when set, take precedence.
HTTP_RETRY_BUDGET = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
PROBE_TIMEOUT_SECONDS = 5
FIX = "start the server or fix MLFLOW_TRACKING_URI"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _check_server(uri: str) -> None:
    """One short probe: MLflow would retry a dead or failing server with backoff for minutes."""
    for name, value in HTTP_RETRY_BUDGET.items():
        os.environ.setdefault(name, value)
    try:
        answer = requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        raise TrackingError(f"cannot reach the MLflow tracking server {uri} ({type(error).__name__}): {FIX}") from None
    if answer.status_code >= 500:
        raise TrackingError(
            f"the MLflow tracking server {uri} answers {answer.status_code} {answer.reason} on /health: "
            "check its logs and its database, or fix MLFLOW_TRACKING_URI"
        )


def _check_sqlite(uri: str, create: bool, writes: bool) -> None:
    """Refuse a store MLflow would create empty in a new folder, or fail to write with pages of SQLAlchemy.
    (What is in the file, store.prepare checks.)"""
    database = store.database_path(uri)
    assert database is not None  # connect() sends only sqlite URIs here
    folder = database.parent
    if not folder.is_dir():
        raise TrackingError(
            f"the MLflow store {uri} is in a folder that does not exist ({folder}): fix MLFLOW_TRACKING_URI"
        )
    if not database.exists() and not create:
        raise TrackingError(
            f"the MLflow store {uri} does not exist: run `dvc repro` to train and track a model, "
            "fetch the store (mlflow.db and mlartifacts/), or fix MLFLOW_TRACKING_URI"
        )
    # SQLite writes a journal beside the database, so the folder must be writable too.
    if writes and not all(os.access(path, os.W_OK) for path in (database, folder) if path.exists()):
        raise TrackingError(
            f"the MLflow store {uri} is read-only (the file {database} or its folder): "
            "make both writable, or copy the store to a writable folder and point MLFLOW_TRACKING_URI at it"
        )


def _check_database(uri: str) -> None:
    """One connection attempt: MLflow retries a database it cannot reach for over a minute."""
    import sqlalchemy

    shown = uri.split("@")[-1]  # no password in the message
    connect_args = {"connect_timeout": PROBE_TIMEOUT_SECONDS} if uri.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as error:  # drivers raise their own types
        raise TrackingError(f"cannot reach the MLflow store database {shown} ({_first_line(error)}): {FIX}") from None


def connect(*, create: bool = False, writes: bool = False) -> str:
    """Point MLflow at the tracking store and fail early, in one line, when it cannot be used.

    ``create``: a missing sqlite store may be created (training); otherwise its absence is an error.
    ``writes``: the command writes to the store, so a read-only one is refused up front.
    """
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    elif uri.startswith("sqlite:///"):
        _check_sqlite(uri, create, writes)
    elif "://" in uri and not uri.startswith(("file:", "databricks")):
        _check_database(uri)
    mlflow.set_tracking_uri(uri)
    store.prepare(uri)
    try:
        mlflow.search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many types for one cause: the store is unusable
        status = re.search(r"too many (\d+) error responses", str(error))
        reason = (
            f"it answered {status[1]} to {int(os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES']) + 1} tries"
            if status
            else _first_line(error)
        )
        raise TrackingError(f"cannot use the MLflow tracking store {uri} ({reason}): {FIX}") from None
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


# Set by `mlops sweep` for each trial's `mlops train`: the trial's run is nested in the sweep's run.
SWEEP_PARENT_ENV = "MLOPS_SWEEP_PARENT_RUN_ID"
SWEEP_TRIAL_ENV = "MLOPS_SWEEP_TRIAL"


def _sweep() -> tuple[str | None, dict[str, str]]:
    """The sweep's parent run id and the tags of a trial's run, or (None, {}) outside a sweep."""
    parent = os.environ.get(SWEEP_PARENT_ENV) or None
    if parent is None:
        return None, {}
    return parent, {"sweep": parent, "sweep.trial": os.environ.get(SWEEP_TRIAL_ENV, "")}


@contextlib.contextmanager
def _wandb_run(settings: TrackingParams, run_id: str, config: dict | None = None) -> Iterator[object | None]:
    """A W&B run sharing the MLflow run's id, grouped by its sweep; offline unless WANDB_MODE says otherwise."""
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
        group=os.environ.get(SWEEP_PARENT_ENV) or None,
    )
    try:
        yield run
    finally:
        run.finish()


def log_training(params: Params, history: list[dict[str, float]], model_dir: Path, examples: list[str]) -> RunInfo:
    """One MLflow run: params, lineage tags, per-epoch metrics and the model as a pyfunc."""
    uri = connect(create=True, writes=True)
    location = store.artifact_location(uri)  # a sqlite store keeps its artifacts beside it, in mlartifacts/
    if location is not None and mlflow.get_experiment_by_name(params.tracking.experiment) is None:
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # another process created it meanwhile
            mlflow.create_experiment(params.tracking.experiment, artifact_location=location)
    mlflow.set_experiment(params.tracking.experiment)
    flat_params = flatten(params)
    parent, sweep_tags = _sweep()
    with mlflow.start_run(parent_run_id=parent, tags=sweep_tags or None) as run:
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
    connect(create=True, writes=True)
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
