"""Tracking backends: MLflow on sqlite always, Weights & Biases offline when switched on."""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import tiny_params
from mlops import tracking
from mlops.config import Params
from needs import need


def test_wandb_logs_the_same_run_offline(
    pipeline_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need("wandb")
    monkeypatch.chdir(tmp_path)
    params = Params.model_validate(tiny_params(tracking={"wandb": True}))
    history = json.loads((pipeline_project / "models" / "history.json").read_text())

    run = tracking.log_training(params, history, pipeline_project / "models" / "model", ["a fine film"])

    assert run.tracking_uri == "sqlite:///mlflow.db"
    assert MlflowClient(run.tracking_uri).get_run(run.run_id).data.params["tracking.wandb"] == "True"
    offline_runs = list((tmp_path / "wandb").glob(f"offline-run-*-{run.run_id}"))
    assert offline_runs, "wandb wrote no offline run named after the MLflow run"
    assert (offline_runs[0] / f"run-{run.run_id}.wandb").stat().st_size > 0


def test_an_unreachable_tracking_server_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(tracking.TrackingError, match=r"cannot reach the MLflow tracking server http://127.0.0.1:9"):
        tracking.connect()


def test_data_version_reads_the_dvc_file(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc123.dir\n  path: data\n")
    assert tracking.data_version(tmp_path / "data.dvc") == "abc123.dir"
    assert tracking.data_version(tmp_path / "missing.dvc") == "unknown"
