"""Tracking backends: MLflow on sqlite always, Weights & Biases offline when switched on."""

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import tiny_params
from mlops import tracking
from mlops.config import Params, flatten
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
    [offline_run] = (tmp_path / "wandb").glob(f"offline-run-*-{run.run_id}")
    records = wandb_records(offline_run / f"run-{run.run_id}.wandb")
    [started] = [record.run for record in records if record.WhichOneof("record_type") == "run"]
    assert (started.run_id, started.project) == (run.run_id, params.tracking.wandb_project)
    config = {item.key: json.loads(item.value_json) for item in started.config.update if item.key != "_wandb"}
    assert config == flatten(params)
    logged = [
        (record.history.step.num, {item.nested_key[0]: json.loads(item.value_json) for item in record.history.item})
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]
    assert [(step, {k: v for k, v in values.items() if not k.startswith("_")}) for step, values in logged] == [
        (row["epoch"], {k: v for k, v in row.items() if k != "epoch"}) for row in history
    ]


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file: a 7-byte header, then LevelDB's log format
    (32 KiB blocks of records, each a 7-byte header of checksum, length and type; a long record is split
    into FIRST, MIDDLE and LAST pieces). wandb 0.31 no longer ships a Python reader for it."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    block, offset, pending, records = 32768, 7, b"", []
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # too little room for a header: the block's tail is padding
            offset += block - offset % block
            continue
        length, kind = int.from_bytes(data[offset + 4 : offset + 6], "little"), data[offset + 6]
        pending += data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_an_unreachable_tracking_server_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with pytest.raises(tracking.TrackingError, match=r"cannot reach the MLflow tracking server http://127.0.0.1:9"):
        tracking.connect()


def test_data_version_reads_the_dvc_file(tmp_path: Path) -> None:
    (tmp_path / "data.dvc").write_text("outs:\n- md5: abc123.dir\n  path: data\n")
    assert tracking.data_version(tmp_path / "data.dvc") == "abc123.dir"
    assert tracking.data_version(tmp_path / "missing.dvc") == "unknown"
