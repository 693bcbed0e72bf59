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
from mlops.contract import Classifier
from mlops.errors import MlopsError
from mlops.ml.data import Splits, encode_labels

CURVE_POINTS = 200
SLICES = {"under_10_words": (0, 10), "25_words_or_more": (25, 10**9)}


class NoSkillError(MlopsError):
    """The model is no better than always answering the most common label."""


def curve_labels(labels: list[str]) -> list[str]:
    """The classes that get ROC and precision-recall curves: the positive (last) label of two, else each one."""
    return labels[-1:] if len(labels) == 2 else list(labels)


def _one_vs_rest_auc(y_true: np.ndarray, probabilities: np.ndarray, index: int) -> float:
    is_positive = y_true == index
    if is_positive.all() or not is_positive.any():
        return float("nan")
    return float(roc_auc_score(is_positive, probabilities[:, index]))


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1, ROC-AUC, log loss, the majority-class rate, and per-class precision, recall, F1, ROC-AUC.

    ROC-AUC is one-vs-rest, like the curves: of the positive (last) label when there are two, else the mean over
    labels (scikit-learn's macro "ovr"); NaN when a label is absent from ``y_true``.
    """
    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, predicted, labels=classes, zero_division=0)
    class_auc = [_one_vs_rest_auc(y_true, probabilities, index) for index in classes]
    curved = [labels.index(label) for label in curve_labels(labels)]
    roc_auc = float(np.mean([class_auc[index] for index in curved]))
    accuracy = float(accuracy_score(y_true, predicted))
    majority_rate = float(np.bincount(y_true, minlength=len(labels)).max() / len(y_true)) if len(y_true) else 0.0
    return {
        "accuracy": accuracy,
        "macro_f1": float(f1_score(y_true, predicted, average="macro", labels=classes, zero_division=0)),
        "roc_auc": roc_auc,
        "log_loss": float(log_loss(y_true, probabilities, labels=classes)),
        "majority_rate": majority_rate,
        "accuracy_over_majority": accuracy - majority_rate,
        "per_class": {
            label: {
                "precision": float(precision[index]),
                "recall": float(recall[index]),
                "f1": float(f1[index]),
                "roc_auc": class_auc[index],
                "support": int(support[index]),
            }
            for index, label in enumerate(labels)
        },
    }


def skill_problem(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> str | None:
    """Why the model shows no skill (one label for every text, or no better than the majority rate), or None."""
    predicted = np.unique(probabilities.argmax(axis=1))
    metrics = classification_metrics(y_true, probabilities, labels)
    if len(predicted) == 1 and len(y_true) > 1:
        return f"the model predicts {labels[predicted[0]]!r} for all {len(y_true)} test texts"
    if metrics["accuracy_over_majority"] <= 0:
        majority = labels[int(np.bincount(y_true, minlength=len(labels)).argmax())]
        return (
            f"the model's test accuracy {metrics['accuracy']:.4f} does not beat the majority-class rate "
            f"{metrics['majority_rate']:.4f} (always answering {majority!r})"
        )
    return None


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


def _stacked(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def curves(y_true: np.ndarray, probabilities: np.ndarray, labels: list[str]) -> dict[str, pd.DataFrame]:
    """Plot data: confusion pairs, and one-vs-rest ROC and precision-recall curves of each of ``curve_labels``.

    The curves are long tables with a ``class`` column (at most CURVE_POINTS rows per class); a class absent
    from ``y_true`` has no curve.
    """
    roc, precision_recall = [], []
    for label in curve_labels(labels):
        index = labels.index(label)
        is_positive = (y_true == index).astype(int)
        if is_positive.all() or not is_positive.any():
            continue
        fpr, tpr, _ = roc_curve(is_positive, probabilities[:, index])
        precision, recall, _ = precision_recall_curve(is_positive, probabilities[:, index])
        roc.append(_thin(pd.DataFrame({"class": label, "fpr": fpr, "tpr": tpr})))
        pr = pd.DataFrame({"class": label, "recall": recall[::-1], "precision": precision[::-1]})
        precision_recall.append(_thin(pr))
    names = np.array(labels)
    return {
        "confusion": pd.DataFrame({"actual": names[y_true], "predicted": names[probabilities.argmax(axis=1)]}),
        "roc": _stacked(roc, ["class", "fpr", "tpr"]),
        "precision_recall": _stacked(precision_recall, ["class", "recall", "precision"]),
    }


def latency_ms(classifier: Classifier, texts: list[str], requests: int) -> dict[str, float]:
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
