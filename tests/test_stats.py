"""The statistics behind the report and the gate, on synthetic predictions whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from mlops import stats


def synthetic(rows: int, classes: int, skill: float, seed: int, labels: np.ndarray | None = None) -> stats.Predictions:
    """Predictions whose probability of the true class is raised by ``skill``; ties made likely by rounding."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows) if labels is None else labels
    logits = rng.normal(size=(rows, classes))
    logits[np.arange(rows), labels] += skill
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    probabilities = probabilities.round(2) + 0.001  # no zeros; rows still sum to about 1
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return stats.Predictions(labels, probabilities.argmax(axis=1), probabilities)


@pytest.mark.parametrize("classes", [2, 3])
def test_scorers_match_scikit_learn_on_unit_weights(classes: int) -> None:
    predictions = synthetic(500, classes, skill=1.0, seed=classes)
    labels, predicted, probabilities = predictions.labels, predictions.predicted, predictions.probabilities
    auc = (
        roc_auc_score(labels, probabilities[:, 1])
        if classes == 2
        else roc_auc_score(labels, probabilities, multi_class="ovr")
    )
    assert stats.point(stats.accuracy, predictions) == pytest.approx(accuracy_score(labels, predicted))
    assert stats.point(stats.macro_f1, predictions) == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert stats.point(stats.roc_auc, predictions) == pytest.approx(auc)
    assert stats.point(stats.log_loss, predictions) == pytest.approx(log_loss(labels, probabilities))


def test_weights_count_rows_as_if_they_were_repeated() -> None:
    predictions = synthetic(50, 2, skill=0.5, seed=1)
    counts = np.random.default_rng(2).integers(0, 4, 50)
    repeated = stats.Predictions(*(np.repeat(array, counts, axis=0) for array in vars(predictions).values()))
    for scorer in (stats.accuracy, stats.macro_f1, stats.roc_auc, stats.log_loss):
        weighted = scorer(predictions, counts[None, :].astype(float))[0]
        assert weighted == pytest.approx(stats.point(scorer, repeated)), scorer.__name__


def test_the_accuracy_interval_has_the_binomial_width() -> None:
    predictions = synthetic(2500, 2, skill=1.3, seed=3)
    result = stats.interval(stats.accuracy, predictions)
    standard_error = np.sqrt(result.value * (1 - result.value) / 2500)
    assert result.low < result.value < result.high
    assert result.high - result.low == pytest.approx(2 * 1.96 * standard_error, rel=0.15)


def test_identical_models_are_unchanged() -> None:
    predictions = synthetic(300, 2, skill=1.0, seed=4)
    difference = stats.paired_difference(stats.accuracy, predictions, predictions)
    assert (difference.change, difference.low, difference.high) == (0, 0, 0)
    assert difference.verdict(higher_is_better=True, tolerance=0.01) is stats.Verdict.UNCHANGED
    assert stats.mcnemar(predictions, predictions).p_value == 1.0


def test_a_much_worse_model_is_a_significant_regression_and_a_lower_is_better_rise_too() -> None:
    labels = np.random.default_rng(5).integers(0, 2, 2000)
    good, bad = synthetic(2000, 2, 2.0, seed=6, labels=labels), synthetic(2000, 2, 0.5, seed=7, labels=labels)
    accuracy = stats.paired_difference(stats.accuracy, good, bad)
    assert accuracy.high < 0
    assert accuracy.verdict(higher_is_better=True, tolerance=0.01) is stats.Verdict.REGRESSION
    assert stats.paired_difference(stats.accuracy, bad, good).verdict(True, 0.01) is stats.Verdict.IMPROVEMENT
    loss = stats.paired_difference(stats.log_loss, good, bad)
    assert loss.low > 0
    assert loss.verdict(higher_is_better=False, tolerance=0.01) is stats.Verdict.REGRESSION
    assert stats.mcnemar(good, bad).significant


def test_a_significant_change_inside_the_tolerance_is_within_noise() -> None:
    base = synthetic(2000, 2, 1.0, seed=8)
    flipped = base.predicted.copy()
    wrong = np.flatnonzero(flipped != base.labels)[:10]  # 10 of 2,000 rows fixed: +0.005, only improvements
    flipped[wrong] = base.labels[wrong]
    new = stats.Predictions(base.labels, flipped, base.probabilities)
    difference = stats.paired_difference(stats.accuracy, base, new)
    assert difference.change == pytest.approx(0.005)
    assert difference.low > 0
    assert difference.verdict(True, tolerance=0.01) is stats.Verdict.WITHIN_NOISE
    assert difference.verdict(True, tolerance=0.001) is stats.Verdict.IMPROVEMENT


def test_pairing_narrows_the_interval_of_two_similar_models() -> None:
    labels = np.random.default_rng(9).integers(0, 2, 1500)
    base = synthetic(1500, 2, 1.2, seed=10, labels=labels)
    noisy = base.probabilities + np.random.default_rng(11).normal(0, 0.05, base.probabilities.shape)
    new = stats.Predictions(labels, noisy.argmax(axis=1), base.probabilities)
    paired = stats.paired_difference(stats.accuracy, base, new)
    unpaired = stats.unpaired_difference(stats.accuracy, base, new)
    assert not unpaired.paired
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 2
    assert paired.verdict(True, 0.01) is stats.Verdict.WITHIN_NOISE


def test_mcnemar_exact_p_value() -> None:
    labels = np.zeros(12, dtype=int)
    base = stats.Predictions(labels, np.array([0] * 10 + [1] * 2), np.zeros((12, 2)))
    new = stats.Predictions(labels, np.array([1] * 8 + [0] * 4), np.zeros((12, 2)))
    # Discordant rows: 8 only the base got right, 2 only the new one: p = 2 * P(Binomial(10, 0.5) <= 2).
    result = stats.mcnemar(base, new)
    assert (result.only_base_right, result.only_new_right) == (8, 2)
    assert result.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)


def test_paired_predictions_of_other_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same rows"):
        stats.paired_difference(stats.accuracy, synthetic(10, 2, 1, 0), synthetic(11, 2, 1, 0))
