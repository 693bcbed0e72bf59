"""The MLflow model registry on aliases (never the deprecated stages).

- ``challenger``: the newest version that cleared the gate, registered but not (yet) serving everyone.
- ``champion``: the version that serves; ``models:/NAME@champion`` is what servers load.
- ``previous-champion``: the champion that the last promotion replaced, so ``rollback`` can put it back.
  It is an alias rather than a tag so that it is visible in the MLflow UI and loadable as a model URI.

Every function takes an ``MlflowClient`` so the same code runs against sqlite and an ``mlflow server``.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from mlops import tracking
from mlops.errors import MlopsError

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
# Set on a version that rollback demoted, so deploy does not promote it again by accident.
ROLLED_BACK_TAG = "rolled_back"


class RegistryError(MlopsError):
    """The registry lacks the model or version asked for, or cannot do what was asked."""


def _not_found(error: MlflowException) -> bool:
    return error.error_code == "RESOURCE_DOES_NOT_EXIST"


def connect(*, writes: bool = True) -> MlflowClient:
    """A client for the registry, failing in one line when it is unreachable, missing or (``writes``) read-only."""
    return MlflowClient(tracking.connect(writes=writes))


def registered_model(client: MlflowClient, name: str) -> RegisteredModel:
    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if _not_found(error):
            raise RegistryError(
                f"the registry at {client.tracking_uri} has no model named {name!r}: "
                "run `mlops deploy` to register one, or fix tracking.registered_model in params.yaml"
            ) from None
        raise


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """Alias -> version number (as a string) for the registered model ``name``."""
    return {alias: str(version) for alias, version in registered_model(client, name).aliases.items()}


def model_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    registered_model(client, name)
    try:
        return client.get_model_version(name, version)
    except MlflowException as error:
        if _not_found(error):
            raise RegistryError(
                f"model {name!r} has no version {version!r}: `mlops models` lists its versions"
            ) from None
        raise


def promote(client: MlflowClient, name: str, version: str) -> None:
    """Make ``version`` the champion, remembering the champion it replaces as ``previous-champion``.

    The challenger alias is dropped when it pointed at the promoted version: it has nothing left to prove.
    Promoting the current champion again changes nothing.
    """
    version = str(model_version(client, name, version).version)
    current = aliases(client, name)
    champion = current.get(CHAMPION)
    if champion != version:
        if champion is not None:
            client.set_registered_model_alias(name, PREVIOUS_CHAMPION, champion)
        client.set_registered_model_alias(name, CHAMPION, version)
    if current.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)


def retire_challenger(client: MlflowClient, name: str) -> None:
    """Remove the ``challenger`` alias (the canary lost); the champion keeps serving. No challenger: no-op."""
    if CHALLENGER in aliases(client, name):
        client.delete_registered_model_alias(name, CHALLENGER)


def rollback(client: MlflowClient, name: str) -> str:
    """Put the previous champion back and return its version; the demoted version is tagged ``rolled_back``."""
    current = aliases(client, name)
    previous = current.get(PREVIOUS_CHAMPION)
    if previous is None:
        raise RegistryError(
            f"model {name!r} has no previous champion to roll back to: "
            f"rollback undoes the last promotion only (use `mlops promote VERSION` to pick a version)"
        )
    demoted = current.get(CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS_CHAMPION)
    if demoted is not None and demoted != previous:
        client.set_model_version_tag(name, demoted, ROLLED_BACK_TAG, "true")
    return previous


def find_version(client: MlflowClient, name: str, run_id: str, git_commit: str) -> ModelVersion | None:
    """The version already registered for this run or this commit, if any: deploy never registers twice."""
    queries = [f"name = '{name}' and run_id = '{run_id}'"]
    if git_commit != "unknown":
        queries.append(f"name = '{name}' and tags.git_commit = '{git_commit}'")
    for query in queries:
        found = client.search_model_versions(query, order_by=["version_number DESC"], max_results=1)
        if found:
            return found[0]
    return None


def register(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str
) -> ModelVersion:
    """A new version of ``name`` (created if needed) from ``model_uri``, aliased ``challenger``."""
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if not _not_found(error):
            raise
        client.create_registered_model(name, description="Registered by `mlops deploy`; see each version's card.")
    source = model_uri
    model_id = None
    if model_uri.startswith("models:/m-"):  # an MLflow 3 logged model: register it by id
        model_id = model_uri.removeprefix("models:/")
        source = client.get_logged_model(model_id).artifact_location
    created = client.create_model_version(
        name, source, run_id=run_id, tags=tags, description=description, model_id=model_id
    )
    client.set_registered_model_alias(name, CHALLENGER, created.version)
    return created


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, newest first."""
    registered_model(client, name)
    return list(client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"]))


def challenger_version(client: MlflowClient, name: str) -> str:
    version = aliases(client, name).get(CHALLENGER)
    if version is None:
        raise RegistryError(f"model {name!r} has no challenger: name the version, e.g. `mlops promote 3`")
    return version


def version_table(client: MlflowClient, name: str) -> str:
    """The versions of ``name`` with their aliases, commit, accuracy and gate verdict, one per line."""
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases(client, name).items():
        by_version.setdefault(version, []).append(alias)
    lines = [f"{'version':>7}  {'aliases':<28}  {'commit':<10}  {'accuracy':>8}  gate"]
    for found in versions(client, name):
        tags = found.tags
        lines.append(
            f"{found.version:>7}  {','.join(sorted(by_version.get(str(found.version), []))) or '-':<28}  "
            f"{tags.get('git_commit', '-')[:10]:<10}  {tags.get('metric.accuracy', '-'):>8}  {tags.get('gate', '-')}"
        )
    return "\n".join(lines)
