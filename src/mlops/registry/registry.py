"""The MLflow model registry: one registered model whose aliases are the lesson's environments.

- ``dev``: the newest registered version (every registered version is a dev candidate).
- ``staging``: the newest version that cleared the gate.
- ``challenger``: the canary, answering ``serving.challenger_share`` of traffic; the move to it is what the
  `production` GitHub Environment guards.
- ``champion``: the version that serves; ``models:/NAME@champion`` is what servers load. The canary analysis
  (or `mlops promote`) moves it.
- ``previous-champion``: the champion that the last promotion replaced, so ``rollback`` can put it back.

Aliases rather than one registered model per environment: the servers already follow aliases of one model, a
version keeps one number, card and lineage through its whole life, and MLflow shows the environments side by side.

Every move is written ahead as the model's ``pending_move`` tag, applied, recorded as a ``history.*`` tag (who,
how, when, from which version, why) and the pending tag removed; a process killed mid-move leaves the pending tag,
and the next move (or `mlops canary watch`, or `mlops models`) finishes it, so the aliases never stay half-moved.
Every function takes an ``MlflowClient`` so the same code runs against sqlite and an ``mlflow server``.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from mlops import tracking
from mlops.errors import MlopsError
from mlops.ml.spec import METRICS

DEV = "dev"
STAGING = "staging"
CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"
ENVIRONMENTS = (DEV, STAGING, CHALLENGER, CHAMPION, PREVIOUS_CHAMPION)
ROLES = {
    DEV: "dev: the newest registered version",
    STAGING: "staging: the newest version that passed the gate",
    CHALLENGER: "canary: serving.challenger_share of traffic",
    CHAMPION: "production: serves the rest",
    PREVIOUS_CHAMPION: "what `mlops rollback` puts back",
}
# Set on a version that rollback or the canary demoted, so deploy does not promote it again by accident.
ROLLED_BACK_TAG = "rolled_back"
PENDING_TAG = "pending_move"
HISTORY_PREFIX = "history."


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


@dataclass(frozen=True)
class Move:
    """One alias move as recorded in the registry."""

    alias: str
    before: str | None
    after: str | None
    by: str
    via: str
    why: str
    at: float

    def line(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.at))
        return (
            f"{when}  {self.alias:<17}  {self.before or '-':>4} -> {self.after or '-':<4}  "
            f"{self.by} via {self.via}: {self.why}"
        )


def actor() -> str:
    """Who is moving aliases: the GitHub actor and run in Actions, else the local user."""
    if os.environ.get("GITHUB_ACTOR"):
        return f"{os.environ['GITHUB_ACTOR']} (GitHub run {os.environ.get('GITHUB_RUN_ID', '?')})"
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _apply(client: MlflowClient, name: str, target: dict[str, str | None]) -> dict[str, str]:
    """Set or delete each alias; the aliases before."""
    current = aliases(client, name)
    for alias, version in target.items():
        if version is None:
            if alias in current:
                client.delete_registered_model_alias(name, alias)
        elif current.get(alias) != version:
            client.set_registered_model_alias(name, alias, version)
    return current


def _record(client: MlflowClient, name: str, moves: list[Move]) -> None:
    for index, move in enumerate(moves):
        key = f"{HISTORY_PREFIX}{time.time_ns():020d}.{index}"
        client.set_registered_model_tag(name, key, json.dumps(move.__dict__))


def move(client: MlflowClient, name: str, target: dict[str, str | None], via: str, why: str) -> list[Move]:
    """Move aliases to ``target`` (None removes one), written ahead so a killed process leaves no half-move."""
    finish_interrupted(client, name)
    current = aliases(client, name)
    target = {alias: version for alias, version in target.items() if current.get(alias) != version}
    if not target:
        return []
    pending = {"target": target, "before": current, "by": actor(), "via": via, "why": why, "at": time.time()}
    client.set_registered_model_tag(name, PENDING_TAG, json.dumps(pending))
    return _complete(client, name, pending)


def _complete(client: MlflowClient, name: str, pending: dict) -> list[Move]:
    _apply(client, name, pending["target"])
    moves = [
        Move(alias, pending["before"].get(alias), after, pending["by"], pending["via"], pending["why"], pending["at"])
        for alias, after in pending["target"].items()
    ]
    _record(client, name, moves)
    client.delete_registered_model_tag(name, PENDING_TAG)
    return moves


def finish_interrupted(client: MlflowClient, name: str) -> list[Move]:
    """Complete an alias move a killed process left half done (no-op when there is none)."""
    pending = registered_model(client, name).tags.get(PENDING_TAG)
    if pending is None:
        return []
    try:
        planned = json.loads(pending)
    except json.JSONDecodeError:
        raise RegistryError(
            f"model {name!r} has an unreadable {PENDING_TAG} tag: check its aliases with `mlops models`, "
            f"set them with `mlops promote`, then delete the tag in the MLflow UI"
        ) from None
    planned["why"] = f"{planned['why']} (finished after an interrupted move)"
    return _complete(client, name, planned)


def history(client: MlflowClient, name: str) -> list[Move]:
    """Every recorded alias move, oldest first."""
    tags = registered_model(client, name).tags
    return [Move(**json.loads(tags[key])) for key in sorted(tags) if key.startswith(HISTORY_PREFIX)]


def promote(client: MlflowClient, name: str, version: str, via: str, why: str) -> list[Move]:
    """Make ``version`` the champion, remembering the champion it replaces as ``previous-champion``.

    The challenger alias is dropped when it pointed at the promoted version: it has nothing left to prove.
    Promoting the current champion again changes nothing.
    """
    version = str(model_version(client, name, version).version)
    current = aliases(client, name)
    target: dict[str, str | None] = {CHAMPION: version}
    champion = current.get(CHAMPION)
    if champion is not None and champion != version:
        target[PREVIOUS_CHAMPION] = champion
    if current.get(CHALLENGER) == version:
        target[CHALLENGER] = None
    return move(client, name, target, via, why)


def start_canary(client: MlflowClient, name: str, version: str, via: str, why: str) -> list[Move]:
    """Make ``version`` the challenger: servers give it ``serving.challenger_share`` of traffic."""
    version = str(model_version(client, name, version).version)
    if aliases(client, name).get(CHAMPION) == version:
        raise RegistryError(f"version {version} of {name!r} is already the champion: it cannot be its own canary")
    return move(client, name, {CHALLENGER: version}, via, why)


def retire_challenger(client: MlflowClient, name: str, via: str, why: str) -> list[Move]:
    """Remove the ``challenger`` alias (the canary lost) and tag that version ``rolled_back``."""
    challenger = aliases(client, name).get(CHALLENGER)
    if challenger is None:
        return []
    client.set_model_version_tag(name, challenger, ROLLED_BACK_TAG, "true")
    return move(client, name, {CHALLENGER: None}, via, why)


def rollback(client: MlflowClient, name: str, via: str, why: str) -> str:
    """Put the previous champion back and return its version; the demoted version is tagged ``rolled_back``."""
    finish_interrupted(client, name)
    current = aliases(client, name)
    previous = current.get(PREVIOUS_CHAMPION)
    if previous is None:
        raise RegistryError(
            f"model {name!r} has no previous champion to roll back to: "
            f"rollback undoes the last promotion only (use `mlops promote VERSION` to pick a version)"
        )
    demoted = current.get(CHAMPION)
    if demoted is not None and demoted != previous:
        client.set_model_version_tag(name, demoted, ROLLED_BACK_TAG, "true")
    move(client, name, {CHAMPION: previous, PREVIOUS_CHAMPION: None}, via, why)
    return previous


def _versions_for(client: MlflowClient, name: str, run_id: str, git_commit: str) -> list[ModelVersion]:
    """Versions registered for this run or this commit, oldest first."""
    queries = [f"name = '{name}' and run_id = '{run_id}'"]
    if git_commit != "unknown":
        queries.append(f"name = '{name}' and tags.git_commit = '{git_commit}'")
    found: dict[int, ModelVersion] = {}
    for query in queries:
        for version in client.search_model_versions(query):
            found[int(version.version)] = version
    return [found[number] for number in sorted(found)]


def find_version(client: MlflowClient, name: str, run_id: str, git_commit: str) -> ModelVersion | None:
    """The version already registered for this run or this commit, if any: deploy never registers twice."""
    found = _versions_for(client, name, run_id, git_commit)
    return found[0] if found else None


def _create_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if not _not_found(error):
            raise
        try:
            client.create_registered_model(name, description="Registered by `mlops deploy`; see each version's card.")
        except MlflowException as racing:
            if racing.error_code != "RESOURCE_ALREADY_EXISTS":  # another deploy created it a moment ago
                raise


def register(
    client: MlflowClient, name: str, model_uri: str, run_id: str, tags: dict[str, str], description: str, via: str
) -> ModelVersion:
    """The version of ``name`` (created if needed) for this run or commit, aliased ``dev``.

    Two deploys of one commit (``tags["git_commit"]``) may race past `find_version`; each checks after creating,
    the oldest version stays, and a racer whose version is newer deletes it, so one commit never has two versions.
    """
    _create_model(client, name)
    source = model_uri
    model_id = None
    if model_uri.startswith("models:/m-"):  # an MLflow 3 logged model: register it by id
        model_id = model_uri.removeprefix("models:/")
        source = client.get_logged_model(model_id).artifact_location
    created = client.create_model_version(
        name, source, run_id=run_id, tags=tags, description=description, model_id=model_id
    )
    if "git_commit" in tags:
        oldest = _versions_for(client, name, run_id, tags["git_commit"])[0]
        if oldest.version != created.version:
            client.delete_model_version(name, created.version)
            return oldest
    move(client, name, {DEV: str(created.version)}, via, "registered")
    return created


def versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, newest first."""
    registered_model(client, name)
    return list(client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"]))


def version_of(client: MlflowClient, name: str, alias: str, example: str) -> str:
    version = aliases(client, name).get(alias)
    if version is None:
        raise RegistryError(f"model {name!r} has no {alias} version: name the version, e.g. `{example}`")
    return version


def environments(client: MlflowClient, name: str) -> str:
    """Each environment (alias) and its version, one per line."""
    current = aliases(client, name)
    return "\n".join(
        f"{alias:>17}: {'v' + current[alias] if alias in current else '-':<5}  {ROLES[alias]}" for alias in ENVIRONMENTS
    )


def version_table(client: MlflowClient, name: str) -> str:
    """The versions of ``name`` with their aliases, commit, headline metric tags and gate verdict, one per line."""
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases(client, name).items():
        by_version.setdefault(version, []).append(alias)
    metrics = [metric for metric in METRICS.headline if metric in METRICS.on_card]  # the ones tagged on a version
    width = {metric: max(len(metric), 8) for metric in metrics}
    header = "".join(f"  {metric:>{width[metric]}}" for metric in metrics)
    lines = [f"{'version':>7}  {'aliases':<28}  {'commit':<10}{header}  gate"]
    for found in versions(client, name):
        tags = found.tags
        rolled_back = " (rolled back)" if tags.get(ROLLED_BACK_TAG) == "true" else ""
        values = "".join(f"  {tags.get(f'metric.{metric}', '-'):>{width[metric]}}" for metric in metrics)
        lines.append(
            f"{found.version:>7}  {','.join(sorted(by_version.get(str(found.version), []))) or '-':<28}  "
            f"{tags.get('git_commit', '-')[:10]:<10}{values}  {tags.get('gate', '-')}{rolled_back}"
        )
    return "\n".join(lines)
