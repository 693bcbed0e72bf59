"""The champion kept as a release file and a wiped registry rebuilt from it (the cold start), on a real sqlite
MLflow store through the command line; a missing, corrupt or foreign release is one error with nothing written."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from conftest import run, tiny_params, write_params
from mlops.registry import registry
from mlops.registry.champion import SCORES_TAG_PREFIX, _stored
from registry_project import NAME, copy_project, error_lines, new_candidate

pytestmark = pytest.mark.slow


def uri_of(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


@pytest.fixture(scope="module")
def published(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    """A project whose deployed champion was packed into release/; the pack's output and the champion as it was."""
    project = copy_project(pipeline_project, tmp_path_factory.mktemp("published") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri_of(project))
        new_candidate(project)
        run(["mlops", "deploy"], project)
        packed = run(["mlops", "registry", "pack", "--out", "release"], project).stdout
    client = MlflowClient(uri_of(project))
    found = client.get_model_version(NAME, "1")
    return (
        project,
        dict(line.split("=", 1) for line in packed.splitlines()),
        {"found": found, "run": client.get_run(found.run_id)},
    )


def test_a_packed_champion_rebuilds_a_wiped_registry_with_its_scores_card_and_a_history_note(
    published: tuple[Path, dict, dict], tmp_path: Path
) -> None:
    source, outputs, before = published
    original = before["found"]
    assert (
        outputs["tag"] == f"model-{original.tags['git_commit'][:12]}"
        and outputs["commit"] == original.tags["git_commit"]
    )
    assert outputs["title"].startswith(f"{NAME} v1 (champion")
    notes = (source / "release" / "notes.md").read_text()
    assert notes.endswith(original.description + "\n") and "mlops registry restore" in notes

    # Another runner: the checkout without any registry, and the release downloaded into a folder.
    project = tmp_path / "project"
    shutil.copytree(source, project, ignore=shutil.ignore_patterns("mlflow.db*", "mlartifacts", "release"))
    shutil.copytree(source / "release", tmp_path / "downloaded")
    restored = run(
        ["mlops", "registry", "restore", "--from", str(tmp_path / "downloaded"), "--summary", "s.md"], project
    )
    said = f"cold start: registry rebuilt from release {outputs['tag']} (version 1 there, champion v1 here)"
    assert restored.stdout.strip() == said and (project / "s.md").read_text() == said + "\n"
    assert sorted(path.name for path in project.iterdir() if path.name.startswith(".restore")) == []

    mlflow.set_tracking_uri(uri_of(project))  # outranks the in-process URI the fixture's training left
    client = MlflowClient(uri_of(project))
    assert registry.aliases(client, NAME) == {"dev": "1", "champion": "1"}
    found = client.get_model_version(NAME, "1")
    assert found.description == original.description
    assert {key: value for key, value in found.tags.items() if key != "release"} == original.tags
    assert found.tags["release"] == outputs["tag"]
    scores = [key for key in found.tags if key.startswith(SCORES_TAG_PREFIX)]
    assert scores and all(_stored(found, key) is not None for key in scores), "deploy will not re-score it"
    run_data = client.get_run(found.run_id).data
    assert run_data.params == before["run"].data.params and run_data.metrics == before["run"].data.metrics
    assert run_data.tags["git_commit"] == before["run"].data.tags["git_commit"]
    [last] = registry.history(client, NAME)[-1:]
    assert last.alias == "champion" and last.after == "1" and last.via == "mlops registry restore"
    assert last.why == f"restored from release {outputs['tag']} (version 1 where it was published)"
    assert "restored from release" in run(["mlops", "models", "--history"], project).stdout
    assert not any(str(tmp_path / "project" / ".restore") in row for row in _locations(project))

    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert len(model.predict(pd.DataFrame({"text": ["a fine film"]}))) == 1


def _locations(project: Path) -> list[str]:
    client = MlflowClient(uri_of(project))
    found = client.get_model_version(NAME, "1")
    return [found.source, client.get_run(found.run_id).info.artifact_uri]


def _tar(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _foreign_model(asset: bytes) -> bytes:
    """The release's archive, its manifest naming another registered model."""
    entries = {}
    with tarfile.open(fileobj=io.BytesIO(asset), mode="r:gz") as archive:
        for member in archive.getmembers():
            if member.isfile():
                entries[member.name] = archive.extractfile(member).read()
    manifest = json.loads(entries["manifest.json"])
    entries["manifest.json"] = json.dumps({**manifest, "registered_model": "someone-elses-model"}).encode()
    return _tar(entries)


BROKEN = {
    "missing": (None, "not found: the release lacks its model.tar.gz asset"),
    "truncated": (lambda asset: asset[: len(asset) // 2], "is corrupt or truncated"),
    "corrupt": (lambda asset: asset[:200] + bytes(b ^ 0xFF for b in asset[200:400]) + asset[400:], "is corrupt"),
    "foreign": (lambda asset: _tar({"README": b"not a model"}), "is not a model release"),
    "another model": (_foreign_model, "holds model 'someone-elses-model', not"),
}


@pytest.mark.parametrize("broken", list(BROKEN))
def test_a_missing_corrupt_or_foreign_release_is_one_error_and_nothing_is_written(
    published: tuple[Path, dict, dict], tmp_path: Path, broken: str
) -> None:
    source, _, _ = published
    damage, message = BROKEN[broken]
    downloaded = tmp_path / "downloaded"
    downloaded.mkdir()
    if damage is not None:
        (downloaded / "model.tar.gz").write_bytes(damage((source / "release" / "model.tar.gz").read_bytes()))
    project = tmp_path / "project"
    project.mkdir()
    write_params(project, tiny_params())
    failed = run(["mlops", "registry", "restore", "--from", str(downloaded)], project, check=False)
    assert failed.returncode == 1
    [error] = error_lines(failed.stderr)
    assert message in error and error.endswith("nothing was written")
    assert sorted(path.name for path in project.iterdir()) == ["params.yaml"]


def test_restore_never_replaces_an_existing_registry(published: tuple[Path, dict, dict]) -> None:
    source, _, _ = published
    before = (source / "mlflow.db").read_bytes()
    failed = run(["mlops", "registry", "restore", "--from", "release"], source, check=False)
    assert failed.returncode == 1
    [error] = error_lines(failed.stderr)
    assert "already exists: restore only rebuilds a missing registry" in error
    assert (source / "mlflow.db").read_bytes() == before
