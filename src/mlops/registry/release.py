"""A copy of the champion to keep as a GitHub Release, and an embedded registry rebuilt from one (the cold start).

Without a tracking server the registry lives in a workflow artifact that expires. Each promoted champion is
therefore also packed into one file, ``model.tar.gz``, that the deploy job attaches to a GitHub Release with the
version's card as its notes. It holds everything needed to register the model again:

- ``model/``: the registered version's files, as MLflow downloads them from ``models:/NAME/VERSION``;
- ``test_scores/KEY.csv``: the per-row predictions stored with the version (`mlops.registry.champion`);
- ``manifest.json``: the version's tags (its stored test scores among them) and card, and its run's experiment,
  params, metrics and tags.

The release's tag is ``model-`` and the first 12 characters of the version's git commit: deploy registers a commit
once, so a commit names one model for good, while version numbers start again at 1 in a rebuilt registry.

`restore` rebuilds a missing embedded store (``mlflow.db`` and ``mlartifacts/``) from an unpacked release: it
checks the whole archive first, builds the store in a temporary folder beside the database, and moves it into
place only when it is complete (artifacts first, so a database is never left without its artifacts). A missing,
corrupt or foreign archive is one error and nothing is written: the deploy fails closed rather than start an
empty registry that would lose the champion.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from mlops.errors import MlopsError
from mlops.registry import registry, store
from mlops.registry.champion import SCORES_TAG_PREFIX, predictions_artifact

ASSET = "model.tar.gz"
NOTES = "notes.md"
MANIFEST = "manifest.json"
MODEL_DIR = "model"
SCORES_DIR = "test_scores"
TAG_PREFIX = "model-"
FORMAT = 1
RELEASE_TAG = "release"  # on a restored version: the release it was rebuilt from
VIA = "mlops registry restore"
BATCH = 100  # MLflow takes at most 100 params in one call


class ReleaseError(MlopsError):
    """The champion cannot be packed, or a release cannot be restored; nothing was written."""


@dataclass(frozen=True)
class Packed:
    tag: str
    title: str
    commit: str
    asset: Path
    notes: Path


@dataclass(frozen=True)
class Restored:
    release: str
    version: str
    published_version: str


def release_tag(commit: str) -> str:
    return f"{TAG_PREFIX}{commit[:12]}"


def _run_tags(tags: dict[str, str]) -> dict[str, str]:
    """The run's own tags; MLflow's bookkeeping ones (logged-model history, user, source file) are left out."""
    kept = {"mlflow.runName", "mlflow.source.git.commit"}
    return {key: value for key, value in tags.items() if not key.startswith("mlflow.") or key in kept}


def pack(client: MlflowClient, name: str, out: Path) -> Packed:
    """Write the champion's ``model.tar.gz`` and release notes into ``out``."""
    version = registry.aliases(client, name).get(registry.CHAMPION)
    if version is None:
        raise ReleaseError(f"model {name!r} has no champion to keep as a release: deploy one first")
    found = client.get_model_version(name, version)
    commit = found.tags.get("git_commit", "unknown")
    if commit == "unknown" or not found.run_id:
        raise ReleaseError(
            f"version {version} of {name!r} has no git commit or run, so it cannot be kept as a release "
            "(deploy registers both when it runs in a git checkout)"
        )
    run = client.get_run(found.run_id)
    tag = found.tags.get(RELEASE_TAG) or release_tag(commit)
    manifest = {
        "format": FORMAT,
        "release": tag,
        "registered_model": name,
        "version": str(version),
        "description": found.description or "",
        "version_tags": dict(found.tags),
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "run": {"params": run.data.params, "metrics": run.data.metrics, "tags": _run_tags(run.data.tags)},
        "mlflow": mlflow.__version__,
    }
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        content = Path(scratch) / "content"
        content.mkdir()
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(content / MODEL_DIR))
        for key in found.tags:
            if key.startswith(SCORES_TAG_PREFIX):
                (content / SCORES_DIR).mkdir(exist_ok=True)
                client.download_artifacts(found.run_id, predictions_artifact(key), str(content / SCORES_DIR))
        (content / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        partial = out / f"{ASSET}.partial"
        with tarfile.open(partial, "w:gz") as archive:
            for child in sorted(content.iterdir()):
                archive.add(child, arcname=child.name)
        os.replace(partial, out / ASSET)
    notes = out / NOTES
    notes.write_text(
        f"Champion version {version} of `{name}`, trained at commit `{commit}`.\n\n"
        f"`{ASSET}` holds the model, its run's params, metrics and tags, and its stored test scores: "
        f"`mlops registry restore --from FOLDER` rebuilds a registry from it (a deploy does so by itself when the "
        f"carried registry is gone).\n\n---\n\n{found.description or ''}\n"
    )
    return Packed(tag, f"{name} v{version} (champion, commit {commit[:7]})", commit, out / ASSET, notes)


def _unpack(archive: Path, target: Path) -> dict:
    """The checked manifest of ``archive``, unpacked into ``target``."""
    try:
        with tarfile.open(archive, "r:gz") as opened:
            opened.extractall(target, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise ReleaseError(
            f"{archive} is corrupt or truncated ({str(error).splitlines()[0][:120]}): download the release's "
            f"{ASSET} again; nothing was written"
        ) from None
    try:
        manifest = json.loads((target / MANIFEST).read_text())
        valid = isinstance(manifest, dict) and manifest.get("format") == FORMAT
    except (OSError, json.JSONDecodeError):
        valid = False
    if not valid or not (target / MODEL_DIR / "MLmodel").is_file():
        raise ReleaseError(
            f"{archive} is not a model release (no readable {MANIFEST} of format {FORMAT}, or no {MODEL_DIR}/MLmodel):"
            f" it was not written by `mlops registry pack`; nothing was written"
        )
    return manifest


def _rebuild(uri: str, unpacked: Path, manifest: dict, name: str) -> str:
    """Register the unpacked model in the empty store at ``uri`` as the champion; its version."""
    client = MlflowClient(uri)
    run_part = manifest["run"]
    experiment = client.create_experiment(manifest["experiment"], artifact_location=store.artifact_location(uri))
    run = client.create_run(experiment, tags=run_part["tags"])
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    params = [Param(key, str(value)) for key, value in run_part["params"].items()]
    metrics = [Metric(key, float(value), now, 0) for key, value in run_part["metrics"].items()]
    for start in range(0, max(len(params), len(metrics)), BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH], params=params[start : start + BATCH])
    if (unpacked / SCORES_DIR).is_dir():
        client.log_artifacts(run_id, str(unpacked / SCORES_DIR), SCORES_DIR)
    client.set_terminated(run_id)
    logged = client.create_logged_model(experiment, name=MODEL_DIR, source_run_id=run_id)
    client.log_model_artifacts(logged.model_id, str(unpacked / MODEL_DIR))
    client.finalize_logged_model(logged.model_id, "READY")
    tags = {**manifest["version_tags"], RELEASE_TAG: manifest["release"]}
    tags.pop(registry.ROLLED_BACK_TAG, None)
    version = registry.register(
        client, name, f"models:/{logged.model_id}", run_id, tags, manifest["description"], VIA
    ).version
    why = f"restored from release {manifest['release']} (version {manifest['version']} where it was published)"
    registry.promote(client, name, str(version), VIA, why)
    return str(version)


def restore(folder: Path, uri: str, name: str) -> Restored:
    """Rebuild the missing embedded store at ``uri`` with the champion of the release unpacked in ``folder``."""
    database = store.database_path(uri)
    if database is None:
        raise ReleaseError(
            f"restore rebuilds the embedded sqlite registry, not {uri}: a tracking server keeps its own registry"
        )
    artifacts = database.parent / store.ARTIFACTS_DIR
    if (database.exists() and database.stat().st_size > 0) or (artifacts.is_dir() and any(artifacts.iterdir())):
        raise ReleaseError(
            f"{database} or {artifacts} already exists: restore only rebuilds a missing registry "
            "(move both away first if you mean to replace it); nothing was written"
        )
    archive = folder / ASSET
    if not archive.is_file():
        raise ReleaseError(
            f"{archive} not found: the release lacks its {ASSET} asset, so the registry cannot be rebuilt. Attach it "
            f"again (`mlops registry pack` from a store that has the version) or delete that release to rebuild from "
            f"the one before; nothing was written"
        )
    database.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=database.parent, prefix=".restore-") as scratch:
        unpacked, building = Path(scratch) / "unpacked", Path(scratch) / "store"
        manifest = _unpack(archive, unpacked)
        if manifest.get("registered_model") != name:
            raise ReleaseError(
                f"{archive} holds model {manifest.get('registered_model')!r}, not {name!r} "
                "(tracking.registered_model in params.yaml): restore a release of this model; nothing was written"
            )
        building.mkdir()
        try:
            version = _rebuild(f"{store.SQLITE_PREFIX}{building / database.name}", unpacked, manifest, name)
        except (MlflowException, KeyError, TypeError, ValueError) as error:
            raise ReleaseError(
                f"cannot register the model of {archive} ({str(error).splitlines()[0][:160]}); nothing was written"
            ) from None
        if artifacts.is_dir():
            artifacts.rmdir()  # empty: checked above
        os.replace(building / store.ARTIFACTS_DIR, artifacts)
        try:
            os.replace(building / database.name, database)
        except OSError:
            shutil.rmtree(artifacts, ignore_errors=True)
            raise
    store.prepare(uri)  # the paths still name the temporary folder, now gone: carry them to the store's own
    return Restored(manifest["release"], version, manifest["version"])
