"""The report's regression flags as pure functions (report/diff.py `metric_rows`), at and around the tolerance.

Unit tests only, so `make mutation` can run them for every mutant of the flags in a fraction of a second.
test_report.py builds whole reports from real results.
"""

from __future__ import annotations

import math

import pytest

from mlops import stats
from mlops.ml.spec import METRICS
from mlops.report.diff import MetricRow, metric_rows

# report.regression_tolerance per headline metric; 0.25 is exact in binary floating point, so "worse by exactly
# the tolerance" is tested exactly. Without per-row predictions (no intervals) the flags judge the values.
TOLERANCE = {name: 0.25 for name in METRICS.headline}


def row(base: dict | None, new: dict, name: str) -> MetricRow:
    return next(found for found in metric_rows(base, new, TOLERANCE) if found.name == name)


@pytest.mark.parametrize(("new", "flagged"), [(0.5, False), (0.4999, True), (0.75, False), (1.0, False)])
def test_a_higher_is_better_metric_is_flagged_when_it_drops_beyond_the_tolerance(new: float, flagged: bool) -> None:
    found = row({"accuracy": 0.75}, {"accuracy": new}, "accuracy")
    assert found.regression is flagged
    assert found.higher_is_better is True


@pytest.mark.parametrize(("new", "flagged"), [(1.25, False), (1.2501, True), (1.0, False), (0.5, False)])
def test_a_lower_is_better_metric_is_flagged_when_it_rises_beyond_the_tolerance(new: float, flagged: bool) -> None:
    """log_loss going up is the regression; going down, however far, is an improvement."""
    found = row({"log_loss": 1.0}, {"log_loss": new}, "log_loss")
    assert found.regression is flagged
    assert found.higher_is_better is False


def test_machine_dependent_metrics_and_the_baseline_are_never_flagged() -> None:
    base = {"latency_p95_ms": 1.0, "baseline": {"accuracy": 0.9}}
    new = {"latency_p95_ms": 100.0, "baseline": {"accuracy": 0.1}}
    assert [found.regression for found in metric_rows(base, new, TOLERANCE)] == [False, False]


def test_a_metric_that_disappears_or_turns_nan_is_flagged_unless_it_was_nan() -> None:
    base = {"accuracy": 0.8, "macro_f1": 0.7, "roc_auc": math.nan}
    rows = {found.name: found for found in metric_rows(base, {"macro_f1": math.nan, "roc_auc": math.nan}, TOLERANCE)}
    assert rows["accuracy"].regression is True and rows["accuracy"].new is None
    assert rows["macro_f1"].regression is True
    assert rows["roc_auc"].regression is False


def test_a_nan_base_or_a_new_metric_is_not_a_regression() -> None:
    assert row({"accuracy": math.nan}, {"accuracy": 0.1}, "accuracy").regression is False
    assert row({}, {"accuracy": 0.1}, "accuracy").regression is False
    assert row(None, {"accuracy": 0.1}, "accuracy").base is None


def test_rows_follow_the_workspace_order_then_the_base_only_metrics() -> None:
    rows = metric_rows({"roc_auc": 0.5, "accuracy": 0.5}, {"macro_f1": 0.5, "accuracy": 0.5}, TOLERANCE)
    assert [found.name for found in rows] == ["macro_f1", "accuracy", "roc_auc"]
    assert [(found.base, found.new) for found in rows] == [(None, 0.5), (0.5, 0.5), (0.5, None)]


def test_counts_and_samples_are_data_not_quality() -> None:
    metrics = {"accuracy": 0.5, "samples": {"test": 100}, "per_class": {"fresh": {"support": 40, "f1": 0.5}}}
    assert [found.name for found in metric_rows(metrics, metrics, TOLERANCE)] == ["accuracy", "per_class.fresh.f1"]


def test_change_is_new_minus_base_when_both_are_finite() -> None:
    assert MetricRow("accuracy", 0.5, 0.75, True, False).change == 0.25
    for base, new in [(None, 0.5), (0.5, None), (math.nan, 0.5), (0.5, math.inf)]:
        assert MetricRow("accuracy", base, new, True, False).change is None


def test_improved_follows_the_direction_and_is_unknown_without_a_change() -> None:
    assert MetricRow("accuracy", 0.5, 0.75, True, False).improved is True
    assert MetricRow("accuracy", 0.75, 0.5, True, True).improved is False
    assert MetricRow("log_loss", 0.75, 0.5, False, False).improved is True
    assert MetricRow("log_loss", 0.5, 0.75, False, True).improved is False
    assert MetricRow("accuracy", 0.5, 0.5, True, False).improved is None
    assert MetricRow("accuracy", None, 0.5, True, False).improved is None


def test_a_headline_metric_without_a_tolerance_is_flagged_at_any_drop() -> None:
    rows = {found.name: found for found in metric_rows({"accuracy": 0.75}, {"accuracy": 0.7499}, {})}
    assert rows["accuracy"].regression is True
    assert metric_rows({"accuracy": 0.75}, {"accuracy": 0.75}, {})[0].regression is False


def interval_row(name: str, base: float, new: float, low: float, high: float) -> MetricRow:
    """The row of ``name`` when its change has the 95% interval ``low`` to ``high`` (paired)."""
    differences = {name: stats.Difference(0.0, 0.0, low, high, paired=True)}
    return next(found for found in metric_rows({name: base}, {name: new}, TOLERANCE, differences) if found.name == name)


def test_with_an_interval_the_verdict_takes_the_recorded_values_and_the_intervals_bounds() -> None:
    found = interval_row("accuracy", 0.75, 0.25, -0.6, -0.4)
    assert found.difference == stats.Difference(0.75, 0.25, -0.6, -0.4, paired=True)
    assert (found.verdict, found.regression) == (stats.Verdict.REGRESSION, True)


@pytest.mark.parametrize(
    ("name", "base", "new", "low", "high", "verdict"),
    [
        ("accuracy", 0.25, 0.75, 0.4, 0.6, stats.Verdict.IMPROVEMENT),
        ("accuracy", 0.75, 0.5, -0.3, -0.2, stats.Verdict.WITHIN_NOISE),  # a drop of exactly the tolerance
        ("accuracy", 0.75, 0.25, -0.6, 0.1, stats.Verdict.WITHIN_NOISE),  # not significant
        ("log_loss", 1.0, 1.5, 0.4, 0.6, stats.Verdict.REGRESSION),
        ("log_loss", 1.5, 1.0, -0.6, -0.4, stats.Verdict.IMPROVEMENT),
    ],
)
def test_with_an_interval_only_a_significant_change_beyond_the_tolerance_in_the_worse_direction_is_flagged(
    name: str, base: float, new: float, low: float, high: float, verdict: stats.Verdict
) -> None:
    found = interval_row(name, base, new, low, high)
    assert found.verdict is verdict
    assert found.regression is (verdict is stats.Verdict.REGRESSION)


@pytest.mark.parametrize(("base", "new"), [(0.75, None), (0.75, math.nan), (math.nan, 0.25)])
def test_with_an_interval_but_no_usable_values_the_flag_is_by_value(base: float, new: float | None) -> None:
    differences = {"accuracy": stats.Difference(0.0, 0.0, -0.6, -0.4, paired=True)}
    new_metrics = {} if new is None else {"accuracy": new}
    found = metric_rows({"accuracy": base}, new_metrics, TOLERANCE, differences)[0]
    assert (found.difference, found.verdict) == (None, None)
    assert found.regression is math.isfinite(base)


def test_metrics_that_are_not_headline_get_no_interval_or_verdict() -> None:
    differences = {"per_class.fresh.f1": stats.Difference(0.0, 0.0, -0.6, -0.4, paired=True)}
    base, new = {"per_class": {"fresh": {"f1": 0.9}}}, {"per_class": {"fresh": {"f1": 0.1}}}
    found = metric_rows(base, new, TOLERANCE, differences)
    assert [(row.name, row.difference, row.verdict, row.regression) for row in found] == [
        ("per_class.fresh.f1", None, None, False)
    ]


def test_after_a_change_of_task_the_dropped_labels_leave_the_base_and_nothing_is_judged() -> None:
    base = {"accuracy": 0.9, "per_class": {"fresh": {"f1": 0.9}, "rotten": {"f1": 0.9}}}
    new = {"accuracy": 0.1, "per_class": {"fresh": {"f1": 0.1}, "neutral": {"f1": 0.1}}}
    differences = {"accuracy": stats.Difference(0.0, 0.0, -0.9, -0.7, paired=True)}
    rows = metric_rows(base, new, TOLERANCE, differences, dropped_labels={"rotten"})
    assert [(row.name, row.base, row.new, row.regression, row.verdict) for row in rows] == [
        ("accuracy", 0.9, 0.1, False, None),
        ("per_class.fresh.f1", 0.9, 0.1, False, None),
        ("per_class.neutral.f1", None, 0.1, False, None),
    ]
