"""The promotion gate's rules, on hand-made metrics and differences (mlops.registry.gate is pure)."""

from __future__ import annotations

import pytest

from mlops import stats
from mlops.config import GateParams
from mlops.registry.gate import evaluate_gate

CHAMPION = {"accuracy": 0.80, "log_loss": 0.45}


def gate(**overrides: object) -> GateParams:
    settings = {"minimum": {}, "maximum": {}, "max_regression": {"accuracy": 0.01, "log_loss": 0.01}}
    return GateParams.model_validate({**settings, **overrides})


def difference(base: float, new: float, low: float, high: float) -> stats.Difference:
    return stats.Difference(base, new, low, high, paired=True)


def checks(verdict: object) -> dict[str, bool]:
    return {check.metric: check.passed for check in verdict.checks}


def test_a_lower_is_better_metric_that_rose_beyond_the_margin_fails_by_value() -> None:
    verdict = evaluate_gate({"accuracy": 0.80, "log_loss": 0.50}, CHAMPION, gate())
    assert checks(verdict) == {"accuracy": True, "log_loss": False}
    assert verdict.failures[0].rule == "no regression" and verdict.failures[0].limit == pytest.approx(0.46)
    assert checks(evaluate_gate({"accuracy": 0.80, "log_loss": 0.40}, CHAMPION, gate())) == {
        "accuracy": True,
        "log_loss": True,
    }


def test_a_lower_is_better_metric_that_rose_significantly_beyond_the_margin_fails_on_the_interval() -> None:
    worse = {"accuracy": 0.80, "log_loss": 0.50}
    rose = {"log_loss": difference(0.45, 0.50, 0.03, 0.07)}
    verdict = evaluate_gate(worse, CHAMPION, gate(), differences=rose)
    assert checks(verdict) == {"accuracy": True, "log_loss": False}
    assert verdict.failures[0].rule == "no significant regression"
    assert verdict.failures[0].interval == (0.03, 0.07)
    assert verdict.failures[0].reason == (
        "log_loss 0.5 breaks no significant regression 0.46 (95% interval +0.03 to +0.07)"
    )

    better = {"accuracy": 0.80, "log_loss": 0.40}
    fell = {"log_loss": difference(0.45, 0.40, -0.07, -0.03)}
    assert evaluate_gate(better, CHAMPION, gate(), differences=fell).passed


def test_a_change_beyond_the_margin_that_is_not_significant_passes_non_inferiority() -> None:
    noisy = {"accuracy": 0.785, "log_loss": 0.47}
    differences = {
        "accuracy": difference(0.80, 0.785, -0.035, 0.004),
        "log_loss": difference(0.45, 0.47, -0.002, 0.04),
    }
    assert evaluate_gate(noisy, CHAMPION, gate(), differences=differences).passed
    assert not evaluate_gate(noisy, CHAMPION, gate()).passed  # by value alone the same change is refused


def test_a_significant_change_within_the_margin_passes() -> None:
    slightly = {"accuracy": 0.795, "log_loss": 0.455}
    differences = {
        "accuracy": difference(0.80, 0.795, -0.008, -0.002),
        "log_loss": difference(0.45, 0.455, 0.001, 0.009),
    }
    assert evaluate_gate(slightly, CHAMPION, gate(), differences=differences).passed


def test_thresholds_on_the_interval_use_its_worse_bound() -> None:
    candidate = {"accuracy": 0.76, "log_loss": 0.50}
    intervals = {"accuracy": stats.Interval(0.76, 0.74, 0.78), "log_loss": stats.Interval(0.50, 0.46, 0.54)}
    thresholds = {"minimum": {"accuracy": 0.75}, "maximum": {"log_loss": 0.52}, "max_regression": {}}
    assert evaluate_gate(candidate, None, gate(**thresholds), intervals=intervals).passed
    on_interval = evaluate_gate(candidate, None, gate(**thresholds, thresholds_on="interval"), intervals=intervals)
    assert checks(on_interval) == {"accuracy": False, "log_loss": False}
    assert on_interval.failures[0].interval == (0.74, 0.78)

    surely = {"accuracy": stats.Interval(0.76, 0.75, 0.77), "log_loss": stats.Interval(0.50, 0.48, 0.52)}
    at_the_limits = evaluate_gate(candidate, None, gate(**thresholds, thresholds_on="interval"), intervals=surely)
    assert checks(at_the_limits) == {"accuracy": True, "log_loss": True}


def test_regression_checks_are_skipped_with_the_reason_when_the_champion_is_another_task() -> None:
    verdict = evaluate_gate({"accuracy": 0.3}, CHAMPION, gate(), skip_regression="labels changed")
    assert verdict.checks == [] and verdict.regression_skipped == "labels changed"
