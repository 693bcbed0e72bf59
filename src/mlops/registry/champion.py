"""The champion's metrics and per-row predictions on the current test split, for the gate's regression checks.

The champion is loaded from the registry and scored by `mlops.stages.score_on_test_split`, the evaluate stage's
own code, so candidate and champion are compared on the same rows with the same metric code (paired intervals).
"""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops import tracking
from mlops.config import Params
from mlops.predictions import Table
from mlops.registry import registry
from mlops.registry.candidate import DeployError


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


def champion_version(client: MlflowClient, name: str) -> str | None:
    try:
        return registry.aliases(client, name).get(registry.CHAMPION)
    except registry.RegistryError:
        return None


def _score(model_uri: str, params: Params) -> tuple[dict, Table]:
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
    return score_on_test_split(classifier, params)


def champion_scores(client: MlflowClient, params: Params, version: str) -> tuple[dict, Table]:
    """What the champion logged at its evaluation, overridden by its scores on today's test split; and its
    predictions on those rows."""
    name = params.tracking.registered_model
    run_id = client.get_model_version(name, version).run_id
    logged = _nested(client.get_run(run_id).data.metrics) if run_id else {}
    scored, predictions = _score(f"models:/{name}/{version}", params)
    return {**logged, **scored}, predictions
