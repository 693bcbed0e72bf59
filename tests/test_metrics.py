"""Metrics come from scikit-learn and say what they should on hand-made predictions, with two labels or more."""

import math

import numpy as np
import pandas as pd
import pytest

from mlops.ml.evaluate import CURVE_POINTS, classification_metrics, curves, skill_problem, slice_metrics

LABELS = ["negative", "positive"]
THREE = ["cats", "dogs", "birds"]


def noisy_scores(classes: int, rows: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities that lean towards the true label, with noise."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, classes, rows)
    logits = rng.normal(size=(rows, classes)) + 1.5 * np.eye(classes)[y]
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_perfect_predictions() -> None:
    y = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    metrics = classification_metrics(y, probabilities, LABELS)
    assert metrics["accuracy"] == 1.0
    assert metrics["macro_f1"] == 1.0
    assert metrics["roc_auc"] == 1.0
    perfect = {"precision": 1.0, "recall": 1.0, "f1": 1.0, "roc_auc": 1.0, "support": 2}
    assert metrics["per_class"]["positive"] == perfect
    assert metrics["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.7, 0.6])))
    assert metrics["majority_rate"] == 0.5 and metrics["accuracy_over_majority"] == 0.5


def test_always_predicting_one_class() -> None:
    y = np.array([0, 0, 0, 1])
    probabilities = np.tile([0.4, 0.6], (4, 1))
    metrics = classification_metrics(y, probabilities, LABELS)
    assert metrics["accuracy"] == 0.25
    assert metrics["per_class"]["negative"]["recall"] == 0.0
    assert metrics["macro_f1"] == pytest.approx(0.2)
    assert metrics["roc_auc"] == 0.5
    assert metrics["accuracy_over_majority"] == -0.5


def test_roc_auc_is_nan_when_a_class_is_absent() -> None:
    metrics = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.4, 0.6]]), LABELS)
    assert math.isnan(metrics["roc_auc"])


def test_with_three_labels_roc_auc_is_the_mean_of_the_per_class_one_vs_rest_aucs() -> None:
    y, probabilities = noisy_scores(3)
    metrics = classification_metrics(y, probabilities, THREE)
    assert list(metrics["per_class"]) == THREE
    per_class = [metrics["per_class"][label]["roc_auc"] for label in THREE]
    assert metrics["roc_auc"] == pytest.approx(np.mean(per_class))
    assert all(0.7 < auc < 1 for auc in per_class)


def test_binary_curves_are_of_the_positive_label_thinned_and_confusion_uses_label_names() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    scores = np.clip(y * 0.3 + rng.random(2000) * 0.7, 0, 1)
    plots = curves(y, np.column_stack([1 - scores, scores]), LABELS)
    assert set(plots["confusion"]["actual"]) == set(LABELS)
    assert len(plots["confusion"]) == 2000
    assert set(plots["roc"]["class"]) == {"positive"} and set(plots["precision_recall"]["class"]) == {"positive"}
    assert len(plots["roc"]) <= CURVE_POINTS and plots["roc"].iloc[-1].tolist() == ["positive", 1.0, 1.0]
    assert len(plots["precision_recall"]) <= CURVE_POINTS
    assert plots["precision_recall"]["recall"].is_monotonic_increasing


def test_with_three_labels_each_label_has_its_own_curves_that_agree_with_its_auc() -> None:
    y, probabilities = noisy_scores(3)
    plots = curves(y, probabilities, THREE)
    metrics = classification_metrics(y, probabilities, THREE)
    for name in ("roc", "precision_recall"):
        assert list(plots[name]["class"].unique()) == THREE
        assert plots[name].groupby("class").size().max() <= CURVE_POINTS
    for label, curve in plots["roc"].groupby("class"):
        area = np.trapezoid(curve["tpr"], curve["fpr"])
        assert area == pytest.approx(metrics["per_class"][label]["roc_auc"], abs=0.01)


def test_a_label_absent_from_the_test_split_has_no_curve() -> None:
    y = np.array([0, 1, 0, 1])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    assert set(curves(y, probabilities, THREE)["roc"]["class"]) == {"cats", "dogs"}


def test_a_model_answering_one_label_or_no_better_than_the_majority_has_no_skill() -> None:
    y = np.array([0, 0, 0, 1, 2])
    always_cats = np.tile([0.5, 0.3, 0.2], (5, 1))
    assert skill_problem(y, always_cats, THREE) == "the model predicts 'cats' for all 5 test texts"
    two_labels_no_better = np.array([[0.6, 0.3, 0.1]] * 2 + [[0.1, 0.8, 0.1]] * 3)
    assert "does not beat the majority-class rate 0.6000 (always answering 'cats')" in skill_problem(
        y, two_labels_no_better, THREE
    )
    assert skill_problem(y, np.eye(3)[y], THREE) is None


def test_slices_by_length() -> None:
    texts = pd.Series(["short one", " ".join(["word"] * 30), "also short"])
    y = np.array([1, 0, 0])
    probabilities = np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3]])
    slices = slice_metrics(texts, y, probabilities)
    assert slices["under_10_words"] == {"rows": 2, "accuracy": 1.0, "macro_f1": 1.0}
    assert slices["25_words_or_more"]["accuracy"] == 0.0
