"""`mlops deploy`: gate the workspace's model against the champion, register it, promote it.

The candidate is the MLflow run in models/run.json with its metrics in evaluate/metrics.json, which
`mlops evaluate` computed on the current test split. When there is a champion, it is loaded from the
registry and scored on that same split with the same metric code, so the comparison is apples to apples
without scoring the candidate twice. The thresholds themselves are applied in one place only:
``mlops.registry.gate.evaluate_gate``.
Nothing in the registry changes unless the gate passes.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops import tracking
from mlops.config import Params
from mlops.errors import MlopsError
from mlops.ml.spec import BASELINE_NAME, CARD_TEMPLATE, METRICS
from mlops.paths import METRICS_FILE, RUN_FILE
from mlops.registry import registry
from mlops.registry.gate import Verdict, evaluate_gate, higher_is_better, metric_value


class DeployError(MlopsError):
    """The candidate or the registry is not in a state deploy can work with."""


class GateRefused(MlopsError):
    """The candidate fell short of at least one threshold; the registry was left unchanged."""

    def __init__(self, result: GateResult) -> None:
        self.result = result
        reasons = "; ".join(check.reason for check in result.verdict.failures)
        super().__init__(f"the gate refused the candidate: {reasons}")


@dataclass(frozen=True)
class Candidate:
    run_id: str
    model_uri: str
    metrics: dict


@dataclass(frozen=True)
class GateResult:
    verdict: Verdict
    candidate: dict
    champion: dict | None
    champion_version: str | None


@dataclass(frozen=True)
class Outcome:
    version: str
    message: str
    gate: GateResult | None


def _read_json(path: Path, produced_by: str) -> dict:
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(f"{path} not found: run `{produced_by}` first") from None
    except json.JSONDecodeError as error:
        raise DeployError(f"{path} is not valid JSON (line {error.lineno}): rerun `{produced_by}`") from None
    if not isinstance(payload, dict):
        raise DeployError(f"{path} must hold a JSON object: rerun `{produced_by}`")
    return payload


def load_candidate(params: Params) -> Candidate:
    """The trained run and its metrics; every metric the gate names must be present and a finite number."""
    run = _read_json(RUN_FILE, "dvc repro train")
    if not run.get("run_id") or not run.get("model_uri"):
        raise DeployError(f"{RUN_FILE} lacks run_id or model_uri: rerun `dvc repro train`")
    metrics = _read_json(METRICS_FILE, "dvc repro evaluate")
    gate = params.gate
    for metric in [*gate.minimum, *gate.maximum, *gate.max_regression]:
        value = metric_value(metrics, metric)
        if value is None or not math.isfinite(value):
            state = "missing" if value is None else "NaN or infinite"
            raise DeployError(
                f"{METRICS_FILE}: metric {metric!r} is {state}, so the gate cannot judge the model: "
                "rerun `dvc repro evaluate`, or remove the metric from gate in params.yaml"
            )
    return Candidate(run_id=str(run["run_id"]), model_uri=str(run["model_uri"]), metrics=metrics)


def _nested(flat: dict[str, float]) -> dict:
    """MLflow's flat dotted metric names back into the nested form of metrics.json."""
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def _score(model_uri: str, params: Params, texts: list[str], y_true) -> dict:
    """Accuracy, macro-F1, ROC-AUC, log loss and per-class scores of a registered model on the test split."""
    from mlops.ml.evaluate import classification_metrics

    try:
        classifier = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().classifier
    except MlflowException as error:
        raise DeployError(
            f"cannot load {model_uri} from {tracking.tracking_uri()} ({str(error).splitlines()[0][:200]}): "
            "check that the model's artifacts are reachable"
        ) from None
    if classifier.labels != params.data.labels:
        raise DeployError(
            f"{model_uri} predicts the labels {classifier.labels} but data.labels is {params.data.labels}: "
            "a champion with other labels cannot be compared; promote a version by hand with `mlops promote`"
        )
    return classification_metrics(y_true, classifier.predict_proba(texts), params.data.labels)


def run_gate(client: MlflowClient, params: Params, candidate: Candidate) -> GateResult:
    """The gate verdict: absolute thresholds, and no regression against the champion re-scored here."""
    name = params.tracking.registered_model
    champion_version = _champion_version(client, name)
    if champion_version is None:
        return GateResult(evaluate_gate(candidate.metrics, None, params.gate), candidate.metrics, None, None)

    from mlops.ml.data import encode_labels, load_splits

    test = load_splits(params.data, params.seed).test
    texts, y_true = test["text"].tolist(), encode_labels(test["label"], params.data.labels)
    champion_run = client.get_model_version(name, champion_version).run_id
    logged = _nested(client.get_run(champion_run).data.metrics) if champion_run else {}
    champion_metrics = {**logged, **_score(f"models:/{name}@{registry.CHAMPION}", params, texts, y_true)}
    verdict = evaluate_gate(candidate.metrics, champion_metrics, params.gate)
    return GateResult(verdict, candidate.metrics, champion_metrics, champion_version)


def _champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return registry.aliases(client, name).get(registry.CHAMPION)
    except registry.RegistryError:
        return None


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


def params_hash(params: Params) -> str:
    return hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def deploy(params: Params, promote: bool = True) -> Outcome:
    """Gate, then register (once per run or commit) as challenger, then promote to champion if asked."""
    candidate = load_candidate(params)
    client = _connect_to_run(candidate)
    name = params.tracking.registered_model
    commit = tracking.git_commit()
    existing = _existing_version(client, name, candidate.run_id, commit)
    champion = _champion_version(client, name)
    if existing is not None:
        version = str(existing.version)
        if version == champion:
            return Outcome(version, f"version {version} of {name} is already the champion: nothing to do", None)
        if existing.tags.get(registry.ROLLED_BACK_TAG) == "true":
            raise DeployError(
                f"version {version} of {name} (this run or commit) was rolled back, so deploy will not promote it "
                f"again: train a new model, or run `mlops promote {version}` if you are sure"
            )

    result = run_gate(client, params, candidate)
    if not result.verdict.passed:
        raise GateRefused(result)

    if existing is None:
        created = registry.register(
            client,
            name,
            candidate.model_uri,
            candidate.run_id,
            _version_tags(params, result, commit),
            model_card(params, result, commit),
        )
        version, action = str(created.version), "registered"
    else:
        version, action = str(existing.version), "already registered"
    if not promote:
        return Outcome(version, f"version {version} of {name} {action} as {registry.CHALLENGER}", result)
    registry.promote(client, name, version)
    return Outcome(version, f"version {version} of {name} {action} and promoted to {registry.CHAMPION}", result)


def _existing_version(client: MlflowClient, name: str, run_id: str, commit: str) -> ModelVersion | None:
    try:
        registry.registered_model(client, name)
    except registry.RegistryError:
        return None
    return registry.find_version(client, name, run_id, commit)


def _gate_summary(result: GateResult) -> str:
    against = f"champion v{result.champion_version}" if result.champion_version else "absolute thresholds (no champion)"
    return f"{'passed' if result.verdict.passed else 'failed'} against {against}"


def _version_tags(params: Params, result: GateResult, commit: str) -> dict[str, str]:
    tags = {
        "git_commit": commit,
        "data_version": tracking.data_version(),
        "params_hash": params_hash(params),
        "gate": _gate_summary(result),
        "gate_checks": "; ".join(
            f"{check.metric} {check.rule} {check.limit:.4g}: {check.value:.4g}" for check in result.verdict.checks
        ),
    }
    for metric in METRICS.on_card:
        value = metric_value(result.candidate, metric)
        if value is not None:
            tags[f"metric.{metric}"] = f"{value:.4f}"
    return tags


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def gate_table(result: GateResult) -> str:
    """The checks as a Markdown table (what the CLI prints and the job summary shows)."""
    rows = [
        "| metric | rule | limit | candidate | champion | result |",
        "|---|---|---|---|---|---|",
    ]
    for check in result.verdict.checks:
        champion = metric_value(result.champion, check.metric) if result.champion else None
        rows.append(
            f"| {check.metric} | {check.rule} | {check.limit:.4g} | {_cell(check.value)} | {_cell(champion)} "
            f"| {'pass' if check.passed else '**FAIL**'} |"
        )
    return "\n".join(rows)


def model_card(params: Params, result: GateResult, commit: str) -> str:
    """The version's description: intended use, data, metrics against baseline and champion, limitations."""
    metrics = result.candidate
    baseline = metrics.get("baseline", {})
    samples = metrics.get("samples", {})
    previous = f"champion v{result.champion_version}" if result.champion_version else "previous champion (none)"
    rows = [f"| metric | this model | baseline ({BASELINE_NAME}) | {previous} |", "|---|---|---|---|"]
    for metric in METRICS.on_card:
        direction = "higher" if higher_is_better(metric) else "lower"
        champion = metric_value(result.champion, metric) if result.champion else None
        rows.append(
            f"| {metric} ({direction} is better) | {_cell(metric_value(metrics, metric))} "
            f"| {_cell(metric_value(baseline, metric))} | {_cell(champion)} |"
        )
    split_sizes = ", ".join(f"{split} {counts.get('rows', '?')}" for split, counts in samples.items())
    prose = CARD_TEMPLATE.read_text().format(
        labels=" or ".join(params.data.labels),
        max_length=params.model.max_length,
        registered_model=params.tracking.registered_model,
    )
    return "\n".join(
        [
            f"# {params.tracking.registered_model}",
            "",
            prose.strip(),
            "",
            f"**Data**: `{params.data.path}` (DVC md5 {tracking.data_version()}), split "
            + (f"by `{params.data.group_column}`, no group in two splits" if params.data.group_column else "by row")
            + f"; rows: {split_sizes or 'unknown'}.",
            f"Trained at commit `{commit}` with params hash `{params_hash(params)}`.",
            "",
            "**Metrics** on the test split:",
            "",
            *rows,
            "",
            f"**Gate**: {_gate_summary(result)}.",
        ]
    )


def summary_markdown(result: GateResult | None, outcome: str) -> str:
    """What the deploy job writes to its GitHub job summary."""
    parts = ["## Deploy", "", outcome, ""]
    if result is not None:
        parts += [f"Gate {_gate_summary(result)}:", "", gate_table(result), ""]
    parts.append(f"Registry: `{tracking.tracking_uri()}`")
    return "\n".join(parts) + "\n"
