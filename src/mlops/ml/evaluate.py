"""Metrics, curves and the classical baseline, all from scikit-learn.

Forkers: edit this file to add metrics. Every number in the returned dictionaries
lands in evaluate/metrics.json, the reports and the gate (by its key).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.pipeline import make_pipeline

from mlops.config import EvaluateParams
from mlops.ml.data import Splits, encode_labels
from mlops.ml.model import TextClassifier

CURVE_POINTS = 200
SLICES = {"under_10_words": (0, 10), "25_words_or_more": (25, 10**9)}


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1, ROC-AUC, log loss and per-class precision, recall and F1."""
    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, labels=classes, zero_division=0)
    both_classes_present = len(np.unique(y_true)) == len(labels)
    if not both_classes_present:
        roc_auc = float("nan")
    elif len(labels) == 2:
        roc_auc = roc_auc_score(y_true, probabilities[:, 1])
    else:
        roc_auc = roc_auc_score(y_true, probabilities, multi_class="ovr", labels=classes)
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "macro_f1": float(f1_score(y_true, predicted, average="macro", labels=classes, zero_division=0)),
        "roc_auc": float(roc_auc),
        "log_loss": float(log_loss(y_true, probabilities, labels=classes)),
        "per_class": {
            label: {
                "precision": float(precision[index]),
                "recall": float(recall[index]),
                "f1": float(f1[index]),
                "support": int(support[index]),
            }
            for index, label in enumerate(labels)
        },
    }


def slice_metrics(texts: pd.Series, y_true: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy and macro-F1 on slices by length, where models often fail quietly."""
    words = texts.str.split().str.len().to_numpy()
    slices = {}
    for name, (low, high) in SLICES.items():
        mask = (words >= low) & (words < high)
        if mask.any():
            predicted = probabilities[mask].argmax(axis=1)
            slices[name] = {
                "rows": int(mask.sum()),
                "accuracy": float(accuracy_score(y_true[mask], predicted)),
                "macro_f1": float(f1_score(y_true[mask], predicted, average="macro", zero_division=0)),
            }
    return slices


def _thin(frame: pd.DataFrame) -> pd.DataFrame:
    """At most CURVE_POINTS evenly spaced rows (first and last kept), so committed plot files stay small."""
    if len(frame) <= CURVE_POINTS:
        return frame
    keep = np.unique(np.linspace(0, len(frame) - 1, CURVE_POINTS).round().astype(int))
    return frame.iloc[keep]


def curves(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict[str, pd.DataFrame]:
    """Plot data: confusion pairs, ROC and precision-recall for the last label as the positive class."""
    positive = len(labels) - 1
    scores = probabilities[:, positive]
    is_positive = (y_true == positive).astype(int)
    fpr, tpr, _ = roc_curve(is_positive, scores)
    precision, recall, _ = precision_recall_curve(is_positive, scores)
    names = np.array(labels)
    return {
        "confusion": pd.DataFrame({"actual": names[y_true], "predicted": names[probabilities.argmax(axis=1)]}),
        "roc": _thin(pd.DataFrame({"fpr": fpr, "tpr": tpr})),
        "precision_recall": _thin(pd.DataFrame({"recall": recall[::-1], "precision": precision[::-1]})),
    }


def latency_ms(classifier: TextClassifier, texts: list[str], requests: int) -> dict[str, float]:
    """p50 and p95 of one-text-per-request CPU inference, the way a server sees it."""
    sample = [texts[index % len(texts)] for index in range(requests)]
    for text in sample[:5]:
        classifier.predict_proba([text])
    timings = []
    for text in sample:
        start = time.perf_counter()
        classifier.predict_proba([text])
        timings.append((time.perf_counter() - start) * 1000)
    return {"latency_p50_ms": float(np.percentile(timings, 50)), "latency_p95_ms": float(np.percentile(timings, 95))}


def baseline(splits: Splits, labels: list[str], params: EvaluateParams) -> tuple[dict, np.ndarray]:
    """TF-IDF and logistic regression on the same splits (what the model has to beat): metrics, test probabilities."""
    pipeline = make_pipeline(
        TfidfVectorizer(
            ngram_range=(1, params.baseline_ngram_max),
            max_features=params.baseline_max_features,
            sublinear_tf=True,
        ),
        LogisticRegression(C=params.baseline_c, max_iter=1000),
    )
    pipeline.fit(splits.train["text"], encode_labels(splits.train["label"], labels))
    probabilities = pipeline.predict_proba(splits.test["text"])
    metrics = classification_metrics(encode_labels(splits.test["label"], labels), probabilities, labels)
    return {key: value for key, value in metrics.items() if key != "per_class"}, probabilities
