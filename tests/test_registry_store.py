"""The embedded store (sqlite:///mlflow.db + mlartifacts/) carried to another folder, and a damaged store refused in
one line with nothing changed, never replaced by a silently empty registry."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from conftest import run, tiny_params, write_params
from mlops.registry import registry
from mlops.registry.champion import SCORES_TAG_PREFIX
from monitoring_stack import mlops_serve
from registry_project import NAME, copy_project, error_lines, new_candidate


def locations(database: Path) -> list[str]:
    """Every artifact location MLflow recorded in the store."""
    with contextlib.closing(sqlite3.connect(database)) as connection:
        return [
            row[0]
            for query in (
                "select artifact_location from experiments",
                "select artifact_uri from runs",
                "select artifact_location from logged_models",
                "select source from model_versions",
                "select storage_location from model_versions",
            )
            for row in connection.execute(query)
        ]


@pytest.mark.slow
@pytest.mark.heavy
def test_a_store_moved_to_another_folder_deploys_and_serves_from_there(
    pipeline_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = copy_project(pipeline_project, tmp_path / "built-here")
    new_candidate(built, negate=True)  # the embedded store: no MLFLOW_TRACKING_URI
    run(["mlops", "deploy"], built)
    assert all(str(built) in location for location in locations(built / "mlflow.db") if location.startswith("/"))

    moved = tmp_path / "carried-there"
    built.rename(moved)
    listing = run(["mlops", "models"], moved).stdout
    assert "champion: v1" in listing
    assert not any(str(built) in location for location in locations(moved / "mlflow.db"))
    assert any(location.startswith(f"{moved}/mlartifacts/") for location in locations(moved / "mlflow.db"))

    # The champion is loaded from the carried artifacts (its stored scores removed so deploy re-scores it).
    client = MlflowClient(f"sqlite:///{moved / 'mlflow.db'}")
    for tag in client.get_model_version(NAME, "1").tags:
        if tag.startswith(SCORES_TAG_PREFIX):
            client.delete_model_version_tag(NAME, "1", tag)
    # This process's MLflow still holds a connection to the file under its old name: a new one, as a runner has.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{moved / 'mlflow.db'}")
    new_candidate(moved, negate=True)  # the original weights beat the negated champion
    deployed = run(["mlops", "deploy"], moved)
    assert "version 2 of" in deployed.stdout and "promoted to champion" in deployed.stdout
    assert registry.aliases(client, NAME)["previous-champion"] == "1"

    with mlops_serve(moved, moved / "params.yaml", env={"MLFLOW_TRACKING_URI": ""}) as server:
        answer = httpx.post(f"{server}/predict", json={"text": "a wonderful film"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert httpx.get(f"{server}/readyz", timeout=10).status_code == 200


def embedded_store(folder: Path) -> Path:
    """A real embedded store with one registered model and an artifact, in ``folder``."""
    write_params(folder, tiny_params())
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    client.create_registered_model(NAME)
    (folder / "mlartifacts" / "0").mkdir(parents=True)
    (folder / "mlartifacts" / "0" / "model.bin").write_bytes(b"weights")
    return folder / "mlflow.db"


def truncate(database: Path) -> None:
    database.write_bytes(database.read_bytes()[: database.stat().st_size // 3])


def garbage(database: Path) -> None:
    database.write_bytes(b"<html>502 Bad Gateway</html>" * 100)


def newer_schema(database: Path) -> None:
    with contextlib.closing(sqlite3.connect(database)) as connection, connection:
        connection.execute("update alembic_version set version_num = 'ffffffffffff'")


def emptied(database: Path) -> None:
    database.write_bytes(b"")


def removed(database: Path) -> None:
    database.unlink()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncate, "is not a readable SQLite database (database disk image is malformed)"),
        (garbage, "is not a readable SQLite database (file is not a database)"),
        (newer_schema, "was written by a newer MLflow (schema revision ffffffffffff is unknown to mlflow"),
        (emptied, "is empty but"),
        (removed, "does not exist: run `dvc repro`"),
    ],
)
def test_a_damaged_store_is_one_line_and_left_as_it_was(tmp_path: Path, damage, message: str) -> None:
    database = embedded_store(tmp_path)
    damage(database)
    before = database.read_bytes() if database.exists() else None
    for command in (["mlops", "models"], ["mlops", "rollback"]):
        result = run(command, tmp_path, check=False)
        assert result.returncode == 1
        [error] = error_lines(result.stderr)
        assert message in error and "mlflow.db" in error
    assert (database.read_bytes() if database.exists() else None) == before
    assert (tmp_path / "mlartifacts" / "0" / "model.bin").exists()


def test_an_empty_folder_gets_no_silent_empty_store(tmp_path: Path) -> None:
    write_params(tmp_path, tiny_params())
    result = run(["mlops", "models"], tmp_path, check=False)
    assert result.returncode == 1 and "mlflow.db does not exist: run `dvc repro`" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_promote_refuses_a_version_that_is_not_a_number_before_opening_the_store(tmp_path: Path) -> None:
    write_params(tmp_path, tiny_params())
    result = run(["mlops", "promote", "v3"], tmp_path, check=False)
    assert result.returncode == 1
    assert error_lines(result.stderr) == ["error: 'v3' is not a version number: `mlops models` lists the versions"]
    assert not (tmp_path / "mlflow.db").exists()
