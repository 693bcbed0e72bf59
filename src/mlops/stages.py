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

from mlops import predictions as predictions_lib
from mlops import stats, tracking
from mlops.config import Params
from mlops.contract import Classifier
from mlops.datacheck import check_data
from mlops.dotted import numeric_leaves
from mlops.ml import evaluate as evaluate_lib
from mlops.ml import pretrain as pretrain_lib
from mlops.ml import train as train_lib
from mlops.ml.data import DataError, describe, encode_labels, load_splits, pretraining_texts
from mlops.ml.model import LABEL_SHARE_FILE, load_classifier
from mlops.paths import (
    EVALUATE_DIR,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_DIR,
    MODELS_DIR,
    PLOTS_DIR,
    PREDICTIONS_FILE,
    PRETRAINED_DIR,
    PRETRAINED_HISTORY_FILE,
    RUN_FILE,
)

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


def _is_main_process() -> bool:
    """False in every process but rank 0 of a `torchrun` launch (the Trainer has joined the process group)."""
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def pretrain(params: Params) -> list[dict[str, float]]:
    """Pretrain the tokenizer and encoder on the unlabelled texts (never a validation or test row) into
    pretrained/, and return the loss per epoch."""
    check_data(params.data.path)
    texts = pretraining_texts(params.data, load_splits(params.data))
    with tempfile.TemporaryDirectory(prefix=".pretrained-", dir=".") as staging:
        staged = Path(staging) / PRETRAINED_DIR.name
        history = pretrain_lib.pretrain(texts, params, staged)
        _write_json(staged / PRETRAINED_HISTORY_FILE.name, history)
        _replace_dir(staged, PRETRAINED_DIR)
    log.info("saved the pretrained encoder and tokenizer in %s (%d texts)", PRETRAINED_DIR, len(texts))
    return history


def train(params: Params) -> tracking.RunInfo | None:
    """Train, save models/ and track the run; under `torchrun` every process trains and only rank 0 writes and
    logs, the others return None."""
    check_data(params.data.path)
    splits = load_splits(params.data)
    if params.train.batch_size > len(splits.train):
        raise DataError(
            f"train.batch_size {params.train.batch_size} is more than the {len(splits.train)} training rows: lower it"
        )
    with tempfile.TemporaryDirectory(prefix=".models-", dir=".") as staging:
        staged = Path(staging) / MODELS_DIR.name
        model_dir = staged / MODEL_DIR.name
        history = train_lib.train(splits, params, model_dir)
        if not _is_main_process():
            return None
        shares = splits.train["label"].value_counts(normalize=True)
        _write_json(model_dir / LABEL_SHARE_FILE, {label: float(shares.get(label, 0)) for label in params.data.labels})
        _write_json(staged / HISTORY_FILE.name, history)
        run = tracking.log_training(params, history, model_dir, splits.test["text"].head(3).tolist())
        _write_json(staged / RUN_FILE.name, run.to_json())
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
    check_data(params.data.path)
    splits = load_splits(params.data)
    classifier = load_classifier(MODEL_DIR)
    texts = splits.test["text"].tolist()
    y_true = encode_labels(splits.test["label"], labels)
    probabilities = classifier.predict_proba(texts)
    predictions_lib.check_finite(probabilities, "the model")
    baseline_metrics, baseline_probabilities = evaluate_lib.baseline(splits, labels, params.evaluate)
    predictions_lib.check_finite(baseline_probabilities, "the baseline")

    metrics = evaluate_lib.classification_metrics(y_true, probabilities, labels)
    metrics["model_size_mb"] = classifier.size_mb()
    metrics.update(evaluate_lib.latency_ms(classifier, texts, params.evaluate.latency_requests))
    metrics["slices"] = evaluate_lib.slice_metrics(splits.test["text"], y_true, probabilities)
    metrics["baseline"] = baseline_metrics
    metrics["samples"] = describe(splits, labels)
    metrics = _rounded(metrics)

    with tempfile.TemporaryDirectory(prefix=".evaluate-", dir=".") as staging:
        staged = Path(staging) / EVALUATE_DIR.name
        plots = staged / PLOTS_DIR.name
        plots.mkdir(parents=True)
        _write_json(staged / METRICS_FILE.name, metrics)
        scored = {"": probabilities, predictions_lib.BASELINE_PREFIX: baseline_probabilities}
        rows = predictions_lib.table(predictions_lib.row_keys(texts), labels, y_true, scored)
        (staged / PREDICTIONS_FILE.name).write_text(predictions_lib.to_csv(rows))
        for name, frame in evaluate_lib.curves(y_true, probabilities, labels).items():
            frame.round(4).to_csv(plots / f"{name}.csv", index=False)
        history = pd.DataFrame(json.loads(HISTORY_FILE.read_text()))
        history.round(4).to_csv(plots / "training.csv", index=False)
        _replace_dir(staged, EVALUATE_DIR)

    run = json.loads(RUN_FILE.read_text())
    numbers = {key: value for key, value in numeric_leaves(metrics).items() if math.isfinite(value)}
    if not tracking.log_evaluation(params, run["run_id"], numbers, EVALUATE_DIR):
        log.warning("MLflow run %s is not in %s: evaluation not tracked", run["run_id"], tracking.tracking_uri())

    problem = evaluate_lib.skill_problem(y_true, probabilities, labels)
    if problem and params.evaluate.fail_without_skill:
        raise evaluate_lib.NoSkillError(
            f"{problem}: train longer or on more data (train.epochs, train.learning_rate, data.max_rows), "
            f"or set evaluate.fail_without_skill: false to only warn; {METRICS_FILE} holds the numbers"
        )
    if problem:
        log.warning("%s (evaluate.fail_without_skill is false)", problem)
    return metrics


def score_on_test_split(classifier: Classifier, params: Params) -> tuple[dict, predictions_lib.Table]:
    """The classification metrics and per-example predictions of any classifier on the current test split,
    with the metric code and row keys `evaluate` uses: how deploy scores the champion beside the candidate."""
    torch.set_num_threads(params.threads)
    test = load_splits(params.data).test
    labels = params.data.labels
    y_true = encode_labels(test["label"], labels)
    probabilities = classifier.predict_proba(test["text"].tolist())
    predictions_lib.check_finite(probabilities, "the champion")
    keys = predictions_lib.row_keys(test["text"].tolist())
    scored = stats.Predictions(y_true, probabilities.argmax(axis=1), probabilities)
    table = predictions_lib.Table(keys=keys, labels=list(labels), model=scored, baseline=None)
    return evaluate_lib.classification_metrics(y_true, probabilities, labels), table
