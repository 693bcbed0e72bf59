"""`mlops gate` and `mlops deploy`: the promotion workflow.

Gate the workspace's model (`candidate`) against the thresholds and the champion (`champion`, scored on the same
test split with the same metric code), then register it and promote it. The thresholds themselves are applied in
one place only: ``mlops.registry.gate.evaluate_gate``. The verdict is returned as a value; nothing in the registry
changes unless the gate passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops import comparison, tracking
from mlops.config import Params
from mlops.errors import MlopsError
from mlops.paths import RUN_FILE
from mlops.registry import registry, render, store
from mlops.registry.candidate import Candidate, DeployError, load_candidate
from mlops.registry.champion import champion_scores, champion_version, predictions_artifact, scores_tag
from mlops.registry.gate import Verdict, evaluate_gate


class GateRefused(MlopsError):
    """The candidate fell short of at least one threshold; the registry was left unchanged."""

    def __init__(self, result: GateResult) -> None:
        reasons = "; ".join(check.reason for check in result.verdict.failures)
        super().__init__(f"the gate refused the candidate: {reasons}")


@dataclass(frozen=True)
class GateResult:
    verdict: Verdict
    candidate: dict
    champion: dict | None
    champion_version: str | None
    headline: comparison.Headline  # the candidate's intervals, and its changes against the champion's


class Action(StrEnum):
    REFUSED = "refused"
    NOTHING = "nothing to do"
    REGISTERED = "registered"
    PROMOTED = "promoted"


@dataclass(frozen=True)
class Outcome:
    action: Action
    version: str | None
    message: str
    gate: GateResult | None

    @property
    def refused(self) -> bool:
        return self.action is Action.REFUSED


def run_gate(client: MlflowClient, params: Params, candidate: Candidate) -> GateResult:
    """The gate verdict: absolute thresholds, and no significant regression against the champion, both scored on
    the same test rows (paired bootstrap intervals from the candidate's evaluate/predictions.csv)."""
    version = champion_version(client, params.tracking.registered_model)
    if version is None:
        headline = comparison.compare(None, candidate.predictions)
        verdict = evaluate_gate(candidate.metrics, None, params.gate, intervals=headline.intervals)
        return GateResult(verdict, candidate.metrics, None, None, headline)
    champion, champion_predictions = champion_scores(client, params, version)
    headline = comparison.compare(champion_predictions, candidate.predictions, base_name="the champion")
    verdict = evaluate_gate(candidate.metrics, champion, params.gate, headline.differences, headline.intervals)
    return GateResult(verdict, candidate.metrics, champion, version, headline)


def _connect_to_run(candidate: Candidate) -> MlflowClient:
    client = registry.connect()
    try:
        client.get_run(candidate.run_id)
    except MlflowException:
        raise DeployError(
            f"MLflow run {candidate.run_id} (from {RUN_FILE}) is not in {client.tracking_uri}: "
            "train with MLFLOW_TRACKING_URI pointing at this store (`dvc repro`), then deploy"
        ) from None
    return client


def gate(params: Params) -> GateResult:
    """The verdict alone; the registry is only read."""
    candidate = load_candidate(params)
    return run_gate(_connect_to_run(candidate), params, candidate)


def _existing_version(client: MlflowClient, name: str, run_id: str, commit: str) -> ModelVersion | None:
    try:
        registry.registered_model(client, name)
    except registry.RegistryError:
        return None
    return registry.find_version(client, name, run_id, commit)


# How far deploy moves a version that passes the gate: each environment implies the ones before it.
TARGETS = (registry.STAGING, registry.CHALLENGER, registry.CHAMPION)
VIA = "mlops deploy"


def deploy(params: Params, to: str = registry.CHAMPION) -> Outcome:
    """Gate, register (once per run or commit, as ``dev``), move ``staging``, then the canary or the champion."""
    if to not in TARGETS:
        raise DeployError(f"deploy moves a version to one of {', '.join(TARGETS)}, not {to!r}")
    candidate = load_candidate(params)
    client = _connect_to_run(candidate)
    with store.exclusive(client.tracking_uri):
        return _deploy(client, params, candidate, to)


def _deploy(client: MlflowClient, params: Params, candidate: Candidate, to: str) -> Outcome:
    name = params.tracking.registered_model
    commit = tracking.git_commit()
    existing = _existing_version(client, name, candidate.run_id, commit)
    if existing is not None:
        version = str(existing.version)
        current = registry.aliases(client, name)
        if version in (current.get(to), current.get(registry.CHAMPION)):
            where = to if current.get(to) == version else registry.CHAMPION
            return Outcome(
                Action.NOTHING, version, f"version {version} of {name} is already the {where}: nothing to do", None
            )
        if existing.tags.get(registry.ROLLED_BACK_TAG) == "true":
            raise DeployError(
                f"version {version} of {name} (this run or commit) was rolled back, so deploy will not promote it "
                f"again: train a new model, or run `mlops promote {version}` if you are sure"
            )

    result = run_gate(client, params, candidate)
    if not result.verdict.passed:
        return Outcome(Action.REFUSED, None, f"{GateRefused(result)}; registry unchanged", result)

    if existing is None:
        tag = scores_tag(params)
        if candidate.predictions is not None:
            client.log_text(candidate.run_id, candidate.predictions, predictions_artifact(tag))
        tags = {**render.version_tags(params, result, commit), tag: json.dumps(candidate.metrics)}
        card = render.model_card(params, result, commit)
        created = registry.register(client, name, candidate.model_uri, candidate.run_id, tags, card, VIA)
        version, done = str(created.version), "registered"
    else:
        version, done = str(existing.version), "already registered"
    registry.move(client, name, {registry.STAGING: version}, VIA, f"the gate {render.gate_summary(result)}")
    if to == registry.STAGING:
        message = f"version {version} of {name} {done} and moved to {registry.STAGING}"
        return Outcome(Action.REGISTERED, version, message, result)
    if to == registry.CHALLENGER:
        registry.start_canary(client, name, version, VIA, "passed the gate: canary")
        message = f"version {version} of {name} {done} and serving as {registry.CHALLENGER} (canary)"
        return Outcome(Action.REGISTERED, version, message, result)
    registry.promote(client, name, version, VIA, "passed the gate: promoted without a canary")
    return Outcome(
        Action.PROMOTED, version, f"version {version} of {name} {done} and promoted to {registry.CHAMPION}", result
    )
