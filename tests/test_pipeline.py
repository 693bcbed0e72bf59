"""End to end: a copy of the repository, `dvc pull` and `dvc repro` with tiny params, checked for real."""

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from conftest import git, run, tiny_params, write_params
from mlops.config import flatten, load_params

LABELS = tiny_params()["data"]["labels"]
MODEL_METRICS = {"accuracy", "macro_f1", "roc_auc", "log_loss", "model_size_mb", "latency_p50_ms", "latency_p95_ms"}


def test_repro_writes_metrics_and_plots(pipeline_project: Path) -> None:
    metrics = json.loads((pipeline_project / "evaluate" / "metrics.json").read_text())
    assert set(metrics) >= MODEL_METRICS
    assert list(metrics["per_class"]) == LABELS
    assert set(metrics["baseline"]) >= {"accuracy", "macro_f1", "roc_auc", "log_loss"}
    assert metrics["samples"]["test"]["rows"] == sum(metrics["per_class"][label]["support"] for label in LABELS)
    assert sum(split["rows"] for split in metrics["samples"].values()) <= 600

    plots = pipeline_project / "evaluate" / "plots"
    # Each metric is what its definition gives on the stage's own outputs (rounded to 4 places in metrics.json).
    confusion = pd.read_csv(plots / "confusion.csv")
    assert len(confusion) == metrics["samples"]["test"]["rows"]
    assert metrics["accuracy"] == pytest.approx((confusion["actual"] == confusion["predicted"]).mean(), abs=5e-5)
    per_class_f1 = [metrics["per_class"][label]["f1"] for label in ("rotten", "fresh")]
    assert metrics["macro_f1"] == pytest.approx(sum(per_class_f1) / 2, abs=1e-4)
    model_files = (pipeline_project / "models" / "model").iterdir()
    weights = sum(path.stat().st_size for path in model_files if path.suffix in {".safetensors", ".bin"}) / 2**20
    assert metrics["model_size_mb"] == pytest.approx(weights, abs=5e-5)
    assert 0 < metrics["latency_p50_ms"] <= metrics["latency_p95_ms"]
    columns = {
        "confusion": ["actual", "predicted"],
        "roc": ["class", "fpr", "tpr"],
        "precision_recall": ["class", "recall", "precision"],
        "training": ["epoch", "train_loss", "validation_loss", "validation_accuracy"],
    }
    for name, expected in columns.items():
        assert list(pd.read_csv(plots / f"{name}.csv").columns) == expected
    assert len(pd.read_csv(plots / "training.csv")) == 2


def test_dvc_reads_the_metrics_and_plots(pipeline_project: Path) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], pipeline_project).stdout)
    written = json.loads((pipeline_project / "evaluate" / "metrics.json").read_text())
    assert shown[""]["data"]["evaluate/metrics.json"]["data"] == written
    out = pipeline_project.parent / "plots-html"
    run(["dvc", "plots", "show", "-o", str(out)], pipeline_project)
    html = (out / "index.html").read_text()
    for title in ("Confusion matrix", "ROC curve", "Precision-recall curve", "Loss per epoch"):
        assert title in html


def test_a_second_repro_does_nothing(pipeline_project: Path) -> None:
    status = run(["dvc", "status", "--json"], pipeline_project).stdout
    assert json.loads(status) == {}
    model = pipeline_project / "models" / "model" / "model.safetensors"
    before = model.stat().st_mtime_ns
    output = run(["dvc", "repro"], pipeline_project).stdout
    assert "Running stage" not in output
    assert model.stat().st_mtime_ns == before


def test_the_lock_and_metrics_are_committed_and_models_are_not(pipeline_project: Path) -> None:
    tracked = set(git(pipeline_project, "ls-files").splitlines())
    assert {"dvc.lock", "evaluate/metrics.json", "evaluate/plots/training.csv"} <= tracked
    assert not any(name.startswith(("models/", "mlflow.db", "mlruns/")) for name in tracked)


def test_the_mlflow_run_holds_params_lineage_history_metrics_and_model(pipeline_project: Path) -> None:
    run_info = json.loads((pipeline_project / "models" / "run.json").read_text())
    client = MlflowClient(f"sqlite:///{pipeline_project / 'mlflow.db'}")
    logged = client.get_run(run_info["run_id"])

    params = load_params(pipeline_project / "params.yaml")
    assert logged.data.params["train.epochs"] == "2"
    assert set(logged.data.params) == set(flatten(params))

    data_md5 = yaml.safe_load((pipeline_project / "data.dvc").read_text())["outs"][0]["md5"]
    assert logged.data.tags["data_version"] == data_md5
    assert len(logged.data.tags["git_commit"]) == 40

    history = client.get_metric_history(run_info["run_id"], "validation_accuracy")
    assert [point.step for point in history] == [1, 2]

    metrics = json.loads((pipeline_project / "evaluate" / "metrics.json").read_text())
    assert logged.data.metrics["accuracy"] == pytest.approx(metrics["accuracy"])
    assert logged.data.metrics["baseline.accuracy"] == pytest.approx(metrics["baseline"]["accuracy"])
    assert "evaluate/metrics.json" in {item.path for item in client.list_artifacts(run_info["run_id"], "evaluate")}


def test_the_logged_model_loads_offline_and_predicts(pipeline_project: Path) -> None:
    run_info = json.loads((pipeline_project / "models" / "run.json").read_text())
    mlflow.set_tracking_uri(f"sqlite:///{pipeline_project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(run_info["model_uri"])
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["text"]
    assert signature.outputs.input_names() == ["label", "score"]
    assert model.metadata.run_id == run_info["run_id"]
    predictions = model.predict(pd.DataFrame({"text": ["a wonderful film", "a dreadful bore"]}))
    assert list(predictions.columns) == ["label", "score"]
    assert set(predictions["label"]) <= set(LABELS)
    assert predictions["score"].between(0.5, 1).all()

    pins = Path(mlflow.pyfunc.get_model_dependencies(run_info["model_uri"])).read_text()
    assert "torch==" in pins and "transformers==" in pins and "mlflow==" in pins


def test_changing_only_evaluation_params_reruns_only_evaluate(pipeline_project: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(pipeline_project, tmp_path / "project", symlinks=True))
    write_params(project, tiny_params(evaluate={"latency_requests": 10}))
    output = run(["dvc", "repro"], project).stdout
    assert "Stage 'train' didn't change, skipping" in output
    assert "Running stage 'evaluate'" in output


@pytest.mark.heavy
def test_a_new_training_seed_is_scored_on_the_same_test_rows(pipeline_project: Path, tmp_path: Path) -> None:
    """The split has its own seed (data.split_seed), so the report pairs a reseeded model with main's."""
    project = Path(shutil.copytree(pipeline_project, tmp_path / "project", symlinks=True))
    before = pd.read_csv(project / "evaluate" / "predictions.csv")
    write_params(project, tiny_params(seed=7))
    run(["dvc", "repro"], project)
    after = pd.read_csv(project / "evaluate" / "predictions.csv")
    assert sorted(after["row"]) == sorted(before["row"])
    assert not after["p_" + LABELS[0]].equals(before["p_" + LABELS[0]])  # the model did change


def test_bad_params_stop_the_stage_with_one_line_and_touch_nothing(pipeline_project: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(pipeline_project, tmp_path / "project", symlinks=True))
    write_params(project, tiny_params(train={"epochs": -1}))
    outputs = [project / "models" / "run.json", project / "evaluate" / "metrics.json"]
    before = [path.read_bytes() for path in outputs]
    for command in (["mlops", "train"], ["mlops", "evaluate"]):
        result = run(command, project, check=False)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "error: params.yaml: train.epochs: Input should be greater than 0, got -1"
        ]
    assert [path.read_bytes() for path in outputs] == before


def test_missing_data_stops_training_with_one_line_and_touch_nothing(pipeline_project: Path, tmp_path: Path) -> None:
    project = Path(shutil.copytree(pipeline_project, tmp_path / "project", symlinks=True))
    shutil.rmtree(project / "data")
    before = (project / "models" / "run.json").read_bytes()
    result = run(["mlops", "train"], project, check=False)
    assert result.returncode == 1
    data_path = tiny_params()["data"]["path"]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {data_path} not found")
    assert "dvc pull" in result.stderr
    assert (project / "models" / "run.json").read_bytes() == before
