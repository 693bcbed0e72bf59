"""The champion's metrics on the current test split, for the gate's "no regression" checks.

A version's metrics are stored with it as a ``test_scores.KEY`` tag, KEY naming the test split (data version,
split params) and the metric code (the source of the evaluate and data modules): deploy writes the candidate's
evaluate/metrics.json under the current key when it registers it. When the champion has no scores under the
current key (the data, the split or the metric code changed), it is loaded and scored by
`mlops.stages.score_on_test_split`, the evaluate stage's own code, and the scores are stored for next time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops import tracking
from mlops.config import Params
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


def _score(model_uri: str, params: Params) -> dict:
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
    metrics, _ = score_on_test_split(classifier, params)
    return metrics


def champion_metrics(client: MlflowClient, params: Params, version: str) -> dict:
    """What the champion logged at its evaluation, overridden by its scores on today's test split (stored with
    the version, or scored now and stored)."""
    name = params.tracking.registered_model
    found = client.get_model_version(name, version)
    logged = _nested(client.get_run(found.run_id).data.metrics) if found.run_id else {}
    tag = scores_tag(params)
    stored = found.tags.get(tag)
    if stored is not None:
        return {**logged, **json.loads(stored)}
    scored = _score(f"models:/{name}/{version}", params)
    client.set_model_version_tag(name, version, tag, json.dumps(scored))
    return {**logged, **scored}
