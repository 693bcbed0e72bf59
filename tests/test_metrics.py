"""Metrics come from scikit-learn and say what they should on hand-made predictions."""

import math

import numpy as np
import pandas as pd
import pytest

from mlops.ml.evaluate import CURVE_POINTS, classification_metrics, curves, slice_metrics

LABELS = ["rotten", "fresh"]


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    metrics = classification_metrics(y, probabilities, LABELS)
    assert metrics["accuracy"] == 1.0
    assert metrics["macro_f1"] == 1.0
    assert metrics["roc_auc"] == 1.0
    assert metrics["per_class"]["fresh"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.7, 0.6])))


def test_always_predicting_one_class() -> None:
    y = np.array([0, 0, 0, 1])
    probabilities = np.tile([0.4, 0.6], (4, 1))
    metrics = classification_metrics(y, probabilities, LABELS)
    assert metrics["accuracy"] == 0.25
    assert metrics["per_class"]["rotten"]["recall"] == 0.0
    assert metrics["macro_f1"] == pytest.approx(0.2)
    assert metrics["roc_auc"] == 0.5


def test_roc_auc_is_nan_when_a_class_is_absent() -> None:
    metrics = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]), LABELS)
    assert math.isnan(metrics["roc_auc"])


def test_curves_are_thinned_and_confusion_uses_label_names() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    scores = np.clip(y * 0.3 + rng.random(2000) * 0.7, 0, 1)
    plots = curves(y, np.column_stack([1 - scores, scores]), LABELS)
    assert set(plots["confusion"]["actual"]) == {"rotten", "fresh"}
    assert len(plots["confusion"]) == 2000
    assert len(plots["roc"]) <= CURVE_POINTS and plots["roc"].iloc[-1].tolist() == [1.0, 1.0]
    assert len(plots["precision_recall"]) <= CURVE_POINTS
    assert plots["precision_recall"]["recall"].is_monotonic_increasing


def test_slices_by_length() -> None:
    texts = pd.Series(["short one", " ".join(["word"] * 30), "also short"])
    y = np.array([1, 0, 0])
    probabilities = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3]])
    slices = slice_metrics(texts, y, probabilities)
    assert slices["under_10_words"] == {"rows": 2, "accuracy": 1.0, "macro_f1": 1.0}
    assert slices["25_words_or_more"]["accuracy"] == 0.0
