"""The candidate `mlops deploy` judges: the trained run in models/run.json and its metrics in evaluate/metrics.json."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from mlops.config import Params
from mlops.errors import MlopsError
from mlops.paths import METRICS_FILE, PREDICTIONS_FILE, RUN_FILE
from mlops.registry.gate import metric_value


class DeployError(MlopsError):
    """The candidate or the registry is not in a state deploy can work with."""


@dataclass(frozen=True)
class Candidate:
    run_id: str
    model_uri: str
    metrics: dict
    predictions: str | None  # evaluate/predictions.csv; None where evaluate predates it (no intervals then)


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
    predictions = PREDICTIONS_FILE.read_text() if PREDICTIONS_FILE.is_file() else None
    return Candidate(str(run["run_id"]), str(run["model_uri"]), metrics, predictions)
