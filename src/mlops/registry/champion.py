"""The champion's metrics and per-row predictions on the current test split, for the gate's regression checks.

A version's scores are stored with it under a KEY naming the test split (data version, split params) and the
metric code (the source of the evaluate and data modules): its metrics as a ``test_scores.KEY`` tag, its per-row
predictions as the artifact ``test_scores/KEY.csv`` of its run. Deploy stores the candidate's evaluate/ outputs
under the current key when it registers it. When the champion has no scores under the current key (the data, the
split or the metric code changed), it is loaded and scored by `mlops.stages.score_on_test_split`, the evaluate
stage's own code, and the scores are stored for next time. Either way candidate and champion are compared on
the same rows with the same metric code (paired intervals).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlops import predictions as predictions_lib
from mlops import tracking
from mlops.config import Params
from mlops.predictions import Table
from mlops.registry import registry
from mlops.registry.candidate import DeployError

SCORES_TAG_PREFIX = "test_scores."
# The code that decides which rows are the test split and what a metric means.
SCORING_MODULES = ("mlops.ml.data", "mlops.ml.evaluate")


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


def scores_tag(params: Params) -> str:
    """The tag under which a version's metrics on today's test split, with today's metric code, are stored."""
    code = hashlib.sha256()
    for module in SCORING_MODULES:
        code.update(Path(importlib.util.find_spec(module).origin).read_bytes())
    split = {
        "data_version": tracking.data_version(),
        "data": params.data.model_dump(mode="json"),
        "seed": params.seed,
        "code": code.hexdigest(),
    }
    return SCORES_TAG_PREFIX + hashlib.sha256(json.dumps(split, sort_keys=True).encode()).hexdigest()[:16]


def champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return registry.aliases(client, name).get(registry.CHAMPION)
    except registry.RegistryError:
        return None


def predictions_artifact(tag: str) -> str:
    """Where a version's run keeps its per-row test predictions under the key of ``tag``."""
    return f"test_scores/{tag.removeprefix(SCORES_TAG_PREFIX)}.csv"


def _score(model_uri: str, params: Params) -> tuple[dict, str]:
    """The model's metrics and its predictions file (the evaluate stage's format) on today's test split."""
    from mlops.stages import score_on_test_split  # torch and the data: only when there is a champion to score

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
    metrics, table = score_on_test_split(classifier, params)
    frame = predictions_lib.table(table.keys, table.labels, table.model.labels, {"": table.model.probabilities})
    return metrics, predictions_lib.to_csv(frame)


def _stored(found: ModelVersion, tag: str) -> tuple[dict, Table] | None:
    if tag not in found.tags or not found.run_id:
        return None
    try:
        text = mlflow.artifacts.load_text(f"runs:/{found.run_id}/{predictions_artifact(tag)}")
    except (MlflowException, OSError):
        return None
    return json.loads(found.tags[tag]), predictions_lib.read(text)


def champion_scores(client: MlflowClient, params: Params, version: str) -> tuple[dict, Table]:
    """What the champion logged at its evaluation, overridden by its scores on today's test split (stored with
    the version, or scored now and stored); and its predictions on those rows."""
    name = params.tracking.registered_model
    found = client.get_model_version(name, version)
    logged = _nested(client.get_run(found.run_id).data.metrics) if found.run_id else {}
    tag = scores_tag(params)
    stored = _stored(found, tag)
    if stored is None:
        metrics, text = _score(f"models:/{name}/{version}", params)
        if found.run_id:
            client.log_text(found.run_id, text, predictions_artifact(tag))
        client.set_model_version_tag(name, version, tag, json.dumps(metrics))
        stored = metrics, predictions_lib.read(text)
    metrics, predictions = stored
    return {**logged, **metrics}, predictions
