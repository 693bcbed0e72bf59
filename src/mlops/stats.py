"""How sure a difference between two models is: bootstrap intervals over the test rows and McNemar's test.

Numpy only (the report and the gate import it; no torch, no scikit-learn). A bootstrap resample is a row of
weights (how many times each test row was drawn), so every metric of every resample is one matrix product or a
cumulative sum over the whole weight matrix, never a Python loop over resamples.

A scorer is ``scorer(predictions, weights) -> one value per resample``; ``weights`` has one row per resample and
one column per test row. The scorers below match scikit-learn's metrics with unit weights (the tests check that).
Forkers attach them, or their own, to headline metrics in ``mlops.ml.spec.METRICS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0
PROBABILITY_FLOOR = 1e-15  # log loss of a probability rounded to 0 is large, not infinite


@dataclass(frozen=True)
class Predictions:
    """One model's predictions on the test rows: label codes, predicted codes, one probability column per label."""

    labels: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


Scorer = Callable[[Predictions, np.ndarray], np.ndarray]


def _weighted_mean(weights: np.ndarray, values: np.ndarray) -> np.ndarray:
    return weights @ values / weights.sum(axis=1)


def accuracy(predictions: Predictions, weights: np.ndarray) -> np.ndarray:
    return _weighted_mean(weights, (predictions.predicted == predictions.labels).astype(float))


def log_loss(predictions: Predictions, weights: np.ndarray) -> np.ndarray:
    probabilities = predictions.probabilities / predictions.probabilities.sum(axis=1, keepdims=True)
    true_class = probabilities[np.arange(len(predictions)), predictions.labels]
    return _weighted_mean(weights, -np.log(np.clip(true_class, PROBABILITY_FLOOR, 1.0)))


def macro_f1(predictions: Predictions, weights: np.ndarray) -> np.ndarray:
    """Mean over every label of 2·TP / (predicted + actual), 0 where a label is neither (zero_division=0)."""
    classes = np.arange(predictions.probabilities.shape[1])
    actual = (predictions.labels[:, None] == classes).astype(float)
    predicted = (predictions.predicted[:, None] == classes).astype(float)
    true_positives = weights @ (actual * predicted)
    denominator = weights @ (actual + predicted)
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return f1.mean(axis=1)


def _binary_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted ROC-AUC: the chance a drawn positive outscores a drawn negative, ties counting half."""
    order = np.argsort(scores, kind="stable")
    sorted_scores, sorted_positive, sorted_weights = scores[order], positive[order], weights[:, order]
    negatives = np.cumsum(sorted_weights * ~sorted_positive, axis=1)
    # Each row's tie group (equal scores): negatives strictly below it, and negatives level with it.
    starts = np.searchsorted(sorted_scores, sorted_scores, side="left")
    ends = np.searchsorted(sorted_scores, sorted_scores, side="right") - 1
    below = np.where(starts > 0, negatives[:, np.maximum(starts - 1, 0)], 0.0)
    level = negatives[:, ends] - below
    positive_weights = sorted_weights * sorted_positive
    pairs = positive_weights.sum(axis=1) * negatives[:, -1]
    won = (positive_weights * (below + 0.5 * level)).sum(axis=1)
    return np.divide(won, pairs, out=np.full(len(weights), np.nan), where=pairs > 0)


def roc_auc(predictions: Predictions, weights: np.ndarray) -> np.ndarray:
    """Binary: the last label's score. More labels: the macro average of one-vs-rest AUCs (scikit-learn's ovr)."""
    labels_count = predictions.probabilities.shape[1]
    classes = [labels_count - 1] if labels_count == 2 else range(labels_count)
    return np.mean(
        [_binary_auc(predictions.probabilities[:, label], predictions.labels == label, weights) for label in classes],
        axis=0,
    )


def point(scorer: Scorer, predictions: Predictions) -> float:
    return float(scorer(predictions, np.ones((1, len(predictions))))[0])


def resampling_weights(rows: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """One row per bootstrap resample: how often each of ``rows`` rows is drawn (rows draws with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(rows, np.full(rows, 1 / rows), size=resamples).astype(float)


def _bounds(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - CONFIDENCE) / 2 * 100
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan, math.nan
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def interval(scorer: Scorer, predictions: Predictions, resamples: int = RESAMPLES) -> Interval:
    """One model's score on the test rows with its 95% percentile-bootstrap interval."""
    values = scorer(predictions, resampling_weights(len(predictions), resamples))
    return Interval(point(scorer, predictions), *_bounds(values))


class Verdict(StrEnum):
    UNCHANGED = "unchanged"
    WITHIN_NOISE = "within noise"
    IMPROVEMENT = "improvement"
    REGRESSION = "regression"


@dataclass(frozen=True)
class Difference:
    """new - base of one metric, with the 95% bootstrap interval of that change."""

    base: float
    new: float
    low: float
    high: float
    paired: bool  # both scored on the same rows, resampled together

    @property
    def change(self) -> float:
        return self.new - self.base

    def verdict(self, higher_is_better: bool, tolerance: float) -> Verdict:
        """A regression or improvement only when the interval excludes 0 AND the change is beyond ``tolerance``."""
        if self.change == 0 and self.low == 0 and self.high == 0:
            return Verdict.UNCHANGED
        significant = self.low > 0 or self.high < 0
        if not significant or abs(self.change) <= tolerance:
            return Verdict.WITHIN_NOISE
        return Verdict.IMPROVEMENT if (self.change > 0) == higher_is_better else Verdict.REGRESSION


def paired_difference(scorer: Scorer, base: Predictions, new: Predictions, resamples: int = RESAMPLES) -> Difference:
    """Both models scored on the same resamples of the same rows (row i of ``base`` is row i of ``new``)."""
    if len(base) != len(new):
        raise ValueError(f"paired predictions need the same rows: {len(base)} and {len(new)}")
    weights = resampling_weights(len(new), resamples)
    low, high = _bounds(scorer(new, weights) - scorer(base, weights))
    return Difference(point(scorer, base), point(scorer, new), low, high, paired=True)


def unpaired_difference(scorer: Scorer, base: Predictions, new: Predictions, resamples: int = RESAMPLES) -> Difference:
    """Each model resampled on its own rows: for test sets that differ (the interval is wider)."""
    base_values = scorer(base, resampling_weights(len(base), resamples, seed=SEED))
    new_values = scorer(new, resampling_weights(len(new), resamples, seed=SEED + 1))
    low, high = _bounds(new_values - base_values)
    return Difference(point(scorer, base), point(scorer, new), low, high, paired=False)


@dataclass(frozen=True)
class McNemar:
    """Rows only one of two models got right, and the exact two-sided p-value that both err equally often."""

    only_base_right: int
    only_new_right: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 1 - CONFIDENCE


def mcnemar(base: Predictions, new: Predictions) -> McNemar:
    """McNemar's exact test (binomial on the discordant rows), for accuracy on paired rows."""
    base_right = base.predicted == base.labels
    new_right = new.predicted == new.labels
    only_base, only_new = int((base_right & ~new_right).sum()), int((new_right & ~base_right).sum())
    discordant = only_base + only_new
    if discordant == 0:
        return McNemar(0, 0, 1.0)
    smaller = np.arange(min(only_base, only_new) + 1)
    log_terms = (
        math.lgamma(discordant + 1)
        - np.array([math.lgamma(k + 1) + math.lgamma(discordant - k + 1) for k in smaller])
        - discordant * math.log(2)
    )
    return McNemar(only_base, only_new, float(min(1.0, 2 * np.exp(log_terms).sum())))
