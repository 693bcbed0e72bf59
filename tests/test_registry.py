"""The gate, the registry on aliases and rollback, against a real sqlite store and a real `mlflow server` on PostgreSQL.

Candidates are real MLflow runs of the tiny trained model; a "worse" one is the same model with its classifier
negated (it predicts the opposite class, so it scores below the original on the same test split), and a clearly
worse one is also made confident (its log loss rises far beyond the margin: significant even on the tiny split,
where the accuracy drop of a near-chance model is not).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import git, run, tiny_params, write_params
from mlops import paths, tracking
from mlops.registry import deploy, registry, render
from mlops.registry.registry import RegistryError
from registry_project import GATE, NAME, copy_project, error_lines, inside, name_of, new_candidate, snapshot
from servers import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "mlflow-server"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tracking store under test: sqlite in the test's folder, or the session's real server on PostgreSQL
    (one registered model name per test there, since the server outlives the test)."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path / 'project' / 'mlflow.db'}"
    else:
        uri = request.getfixturevalue("mlflow_server_url")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def project(pipeline_project: Path, tmp_path: Path, store: str, request: pytest.FixtureRequest) -> Path:
    project = copy_project(pipeline_project, tmp_path / "project")
    if store.startswith("http"):
        unique = tiny_params(gate=GATE)
        unique["tracking"]["registered_model"] = f"{NAME}-{request.node.name.split('[')[0].replace('_', '-')}"
        write_params(project, unique)
        git(project, "commit", "-q", "-am", "own model name on the shared server")
    return project


def test_promote_better_refuse_worse_and_roll_back(project: Path, store: str) -> None:
    name = name_of(project)
    client = MlflowClient(store)

    # First model: no champion, so the absolute thresholds decide.
    new_candidate(project, negate=True)
    with inside(project) as params:
        first = deploy.deploy(params)
    assert first.version == "1" and not first.gate.verdict.has_champion
    assert registry.aliases(client, name) == {"dev": "1", "staging": "1", "champion": "1"}

    # The original model beats the negated champion on the same test split: promoted.
    new_candidate(project, negate=True)  # negating again restores the original weights
    with inside(project) as params:
        second = deploy.deploy(params)
    assert second.version == "2" and second.gate.verdict.passed and second.gate.champion_version == "1"
    assert second.gate.candidate["accuracy"] > second.gate.champion["accuracy"]
    assert registry.aliases(client, name) == {"dev": "2", "staging": "2", "champion": "2", "previous-champion": "1"}

    # A clearly worse model is refused with its reasons, and nothing in the registry changes.
    new_candidate(project, negate=True, confidence=20.0)
    before = snapshot(client, name)
    with inside(project) as params:
        refused = deploy.deploy(params)
    assert refused.refused and refused.version is None
    failed = {(check.metric, check.rule) for check in refused.gate.verdict.failures}
    assert ("log_loss", "no significant regression") in failed
    assert "log_loss" in refused.message and "breaks no significant regression" in refused.message
    assert snapshot(client, name) == before

    # Rollback restores the previous champion; a second rollback has nothing to restore.
    assert registry.rollback(client, name, "the test", "worse online") == "1"
    assert registry.aliases(client, name) == {"dev": "2", "staging": "2", "champion": "1"}
    assert client.get_model_version(name, "2").tags[registry.ROLLED_BACK_TAG] == "true"
    with pytest.raises(RegistryError, match="no previous champion"):
        registry.rollback(client, name, "the test", "again")


def test_registered_version_carries_lineage_and_card_and_champion_predicts(project: Path, store: str) -> None:
    name = name_of(project)
    run_id = new_candidate(project)
    with inside(project) as params:
        outcome = deploy.deploy(params)
        commit = tracking.git_commit()
        params_hash = render.params_hash(params)
    version = MlflowClient(store).get_model_version(name, outcome.version)
    assert version.run_id == run_id
    assert version.tags["git_commit"] == commit
    assert version.tags["data_version"] == tracking.data_version(project / "data.dvc") != "unknown"
    assert version.tags["params_hash"] == params_hash
    assert version.tags["gate"] == "passed against absolute thresholds (no champion)"
    assert math.isfinite(float(version.tags["metric.accuracy"]))
    for section in ("Intended use", "Data", "Metrics", "baseline", "previous champion", "Limitations"):
        assert section in version.description

    model = mlflow.pyfunc.load_model(f"models:/{name}@{registry.CHAMPION}")
    predicted = model.predict(pd.DataFrame({"text": ["a wonderful, moving film", "dull and far too long"]}))
    assert list(predicted.columns) == ["label", "score"]
    assert set(predicted["label"]) <= set(params.data.labels) and predicted["score"].between(0, 1).all()


def test_deploy_twice_on_one_commit_creates_one_version(project: Path, store: str) -> None:
    name = name_of(project)
    new_candidate(project)
    first = run(["mlops", "deploy"], project)
    second = run(["mlops", "deploy"], project)
    assert "registered and promoted" in first.stdout
    assert "already the champion: nothing to do" in second.stdout
    assert [str(v.version) for v in registry.versions(MlflowClient(store), name)] == ["1"]
    listing = run(["mlops", "models"], project).stdout.splitlines()
    tags = MlflowClient(store).get_model_version(name, "1").tags
    header = next(line for line in listing if line.lstrip().startswith("version"))
    [row] = [line for line in listing if line.lstrip().startswith("1 ")]
    assert header.split() == ["version", "aliases", "commit", "accuracy", "macro_f1", "roc_auc", "log_loss", "gate"]
    assert row.split()[:7] == [
        "1",
        "champion,dev,staging",
        tags["git_commit"][:10],
        *(tags[f"metric.{metric}"] for metric in ("accuracy", "macro_f1", "roc_auc", "log_loss")),
    ]
    assert row.endswith(tags["gate"])


@pytest.mark.parametrize("broken", ["nan", "missing"])
def test_nan_or_missing_metric_is_refused_before_touching_the_registry(project: Path, store: str, broken: str) -> None:
    new_candidate(project)
    metrics_file = project / paths.METRICS_FILE
    metrics = json.loads(metrics_file.read_text())
    if broken == "nan":
        metrics["macro_f1"] = float("nan")
    else:
        del metrics["macro_f1"]
    metrics_file.write_text(json.dumps(metrics))
    result = run(["mlops", "deploy"], project, check=False)
    assert result.returncode == 1
    state = "NaN or infinite" if broken == "nan" else "missing"
    assert error_lines(result.stderr) == [
        f"error: evaluate/metrics.json: metric 'macro_f1' is {state}, so the gate cannot judge the model: "
        "rerun `dvc repro evaluate`, or remove the metric from gate in params.yaml"
    ]
    assert snapshot(MlflowClient(store), name_of(project)) is None


def test_a_version_moves_through_the_environments_and_every_move_is_in_the_history(project: Path, store: str) -> None:
    name = name_of(project)
    client = MlflowClient(store)
    new_candidate(project)
    staged = run(["mlops", "deploy", "--to", "staging"], project).stdout
    assert "registered and moved to staging" in staged
    assert registry.aliases(client, name) == {"dev": "1", "staging": "1"}
    result = run(["mlops", "promote"], project, check=False)
    assert result.returncode == 1 and "has no challenger version" in result.stderr
    canary = run(["mlops", "promote", "--to", "challenger", "--why", "approved by the reviewers"], project).stdout
    assert "version 1 of" in canary and "challenger (canary)" in canary
    assert registry.aliases(client, name) == {"dev": "1", "staging": "1", "challenger": "1"}
    registry.retire_challenger(client, name, "the test", "worse on errors")
    assert registry.aliases(client, name) == {"dev": "1", "staging": "1"}
    assert client.get_model_version(name, "1").tags[registry.ROLLED_BACK_TAG] == "true"
    assert "version 1 of" in run(["mlops", "promote", "1"], project).stdout
    assert registry.aliases(client, name) == {"dev": "1", "staging": "1", "champion": "1"}

    listing = run(["mlops", "models", "--history"], project).stdout
    assert "      champion: v1" in listing and "    challenger: -" in listing
    moves = [(move.alias, move.before, move.after, move.via, move.why) for move in registry.history(client, name)]
    assert moves == [
        ("dev", None, "1", "mlops deploy", "registered"),
        ("staging", None, "1", "mlops deploy", "the gate passed against absolute thresholds (no champion)"),
        ("challenger", None, "1", "mlops promote", "approved by the reviewers"),
        ("challenger", "1", None, "the test", "worse on errors"),
        ("champion", None, "1", "mlops promote", "promoted by hand"),
    ]
    assert all(move.by and move.at > 0 for move in registry.history(client, name))
    assert "mlops promote: approved by the reviewers" in listing


def test_clear_errors_for_unknown_model_no_previous_champion_and_unreachable_server(
    pipeline_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = copy_project(pipeline_project, tmp_path / "project")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    tracking.connect(create=True)  # an empty store: neither the model nor the run is in it
    for command in (["mlops", "models"], ["mlops", "rollback"], ["mlops", "promote", "1"]):
        result = run(command, project, check=False)
        assert result.returncode == 1
        assert error_lines(result.stderr) == [
            f"error: the registry at sqlite:///{project / 'mlflow.db'} has no model named {NAME!r}: "
            "run `mlops deploy` to register one, or fix tracking.registered_model in params.yaml"
        ]

    # The run in models/run.json lives in the pipeline's store, not in this empty one.
    result = run(["mlops", "deploy"], project, check=False)
    assert result.returncode == 1 and "is not in sqlite:///" in result.stderr

    unused = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", unused)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = run(["mlops", "deploy"], project, check=False)
    assert result.returncode == 1
    [error] = error_lines(result.stderr)
    assert error.startswith("error: cannot reach the MLflow tracking") and unused in error
