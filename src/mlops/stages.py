"""The DVC stages: what each reads and writes. dvc.yaml declares the same paths."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import torch

from mlops import tracking
from mlops.config import Params
from mlops.ml import evaluate as evaluate_lib
from mlops.ml import train as train_lib
from mlops.ml.data import describe, encode_labels, load_splits
from mlops.ml.model import LABEL_SHARE_FILE, TextClassifier

MODELS_DIR = Path("models")
MODEL_DIR = MODELS_DIR / "model"
HISTORY_FILE = MODELS_DIR / "history.json"
RUN_FILE = MODELS_DIR / "run.json"
EVALUATE_DIR = Path("evaluate")
METRICS_FILE = EVALUATE_DIR / "metrics.json"
PLOTS_DIR = EVALUATE_DIR / "plots"

log = logging.getLogger(__name__)


def _replace_dir(staged: Path, target: Path) -> None:
    """Swap a fully written directory into place, so a failure never leaves half an output."""
    target.parent.mkdir(parents=True, exist_ok=True)
    previous = target.with_name(f".{target.name}.old")
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        target.rename(previous)
    staged.rename(target)
    shutil.rmtree(previous, ignore_errors=True)


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, allow_nan=True) + "\n")


def train(params: Params) -> tracking.RunInfo:
    splits = load_splits(params.data, params.seed)
    MODELS_DIR.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".models-", dir=".") as staging:
        staged = Path(staging) / "models"
        history = train_lib.train(splits, params, staged / "model")
        shares = splits.train["label"].value_counts(normalize=True)
        _write_json(
            staged / "model" / LABEL_SHARE_FILE, {label: float(shares.get(label, 0.0)) for label in params.data.labels}
        )
        _write_json(staged / "history.json", history)
        run = tracking.log_training(params, history, staged / "model", splits.test["text"].head(3).tolist())
        _write_json(staged / "run.json", run.to_json())
        _replace_dir(staged, MODELS_DIR)
    log.info("trained %s; MLflow run %s", MODEL_DIR, run.run_id)
    return run


def _rounded(value: object) -> object:
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, float) and math.isfinite(value):
        return round(value, 4)
    return value


def evaluate(params: Params) -> dict:
    torch.set_num_threads(params.threads)
    labels = params.data.labels
    splits = load_splits(params.data, params.seed)
    classifier = TextClassifier(MODEL_DIR)
    texts = splits.test["text"].tolist()
    y_true = encode_labels(splits.test["label"], labels)
    probabilities = classifier.predict_proba(texts)

    metrics = evaluate_lib.classification_metrics(y_true, probabilities, labels)
    metrics["model_size_mb"] = classifier.size_mb()
    metrics.update(evaluate_lib.latency_ms(classifier, texts, params.evaluate.latency_requests))
    metrics["slices"] = evaluate_lib.slice_metrics(splits.test["text"], y_true, probabilities)
    metrics["baseline"] = evaluate_lib.baseline_metrics(splits, labels, params.evaluate)
    metrics["samples"] = describe(splits, labels)
    metrics = _rounded(metrics)

    with tempfile.TemporaryDirectory(prefix=".evaluate-", dir=".") as staging:
        staged = Path(staging) / "evaluate"
        (staged / "plots").mkdir(parents=True)
        _write_json(staged / "metrics.json", metrics)
        for name, frame in evaluate_lib.curves(y_true, probabilities, labels).items():
            frame.round(4).to_csv(staged / "plots" / f"{name}.csv", index=False)
        history = pd.DataFrame(json.loads(HISTORY_FILE.read_text()))
        history.round(4).to_csv(staged / "plots" / "training.csv", index=False)
        _replace_dir(staged, EVALUATE_DIR)

    run = json.loads(RUN_FILE.read_text())
    numbers = {key: value for key, value in flat_metrics(metrics).items() if math.isfinite(value)}
    if not tracking.log_evaluation(params, run["run_id"], numbers, EVALUATE_DIR):
        log.warning("MLflow run %s is not in %s: evaluation not tracked", run["run_id"], tracking.tracking_uri())
    return metrics


def flat_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves as dotted keys (per_class.fresh.f1), the form MLflow and the gate use."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_metrics(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat
