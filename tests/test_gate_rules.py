"""The promotion gate's rules as pure functions (registry/gate.py), at and around every limit.

Unit tests only, so `make mutation` can run them for every mutant of the gate in a fraction of a second.
"""

from __future__ import annotations

import math

import pytest

from mlops.config import GateParams
from mlops.registry.gate import Check, Verdict, evaluate_gate, higher_is_better, metric_value

GATE = GateParams(
    minimum={"accuracy": 0.7},
    maximum={"latency_p95_ms": 50.0},
    max_regression={"accuracy": 0.02, "log_loss": 0.05},
)
CHAMPION = {"accuracy": 0.80, "log_loss": 0.40, "latency_p95_ms": 10.0}


def candidate(**metrics: float) -> dict:
    return {"accuracy": 0.80, "log_loss": 0.40, "latency_p95_ms": 10.0, **metrics}


def checks(verdict: Verdict) -> dict[tuple[str, str], Check]:
    return {(check.metric, check.rule): check for check in verdict.checks}


def test_every_threshold_is_checked_in_order_with_its_limit_and_value() -> None:
    verdict = evaluate_gate(candidate(), CHAMPION, GATE)
    assert [(check.metric, check.rule, check.limit, check.value, check.passed) for check in verdict.checks] == [
        ("accuracy", "minimum", 0.7, 0.8, True),
        ("latency_p95_ms", "maximum", 50.0, 10.0, True),
        ("accuracy", "no regression", pytest.approx(0.78), 0.8, True),
        ("log_loss", "no regression", pytest.approx(0.45), 0.4, True),
    ]
    assert verdict.passed and verdict.failures == [] and verdict.has_champion


@pytest.mark.parametrize(("accuracy", "passed"), [(0.7, True), (0.6999, False)])
def test_a_minimum_is_inclusive(accuracy: float, passed: bool) -> None:
    verdict = evaluate_gate(candidate(accuracy=accuracy), None, GATE)
    assert checks(verdict)["accuracy", "minimum"].passed is passed
    assert verdict.passed is passed


@pytest.mark.parametrize(("latency", "passed"), [(50.0, True), (50.001, False)])
def test_a_maximum_is_inclusive(latency: float, passed: bool) -> None:
    verdict = evaluate_gate(candidate(latency_p95_ms=latency), None, GATE)
    assert checks(verdict)["latency_p95_ms", "maximum"].passed is passed
    assert verdict.passed is passed


@pytest.mark.parametrize(("accuracy", "passed"), [(0.78, True), (0.7799, False), (0.9, True)])
def test_a_higher_is_better_metric_may_drop_by_at_most_its_allowance(accuracy: float, passed: bool) -> None:
    check = checks(evaluate_gate(candidate(accuracy=accuracy), CHAMPION, GATE))["accuracy", "no regression"]
    assert check.limit == pytest.approx(0.78)
    assert check.passed is passed


@pytest.mark.parametrize(("log_loss", "passed"), [(0.45, True), (0.4501, False), (0.1, True), (0.9, False)])
def test_a_lower_is_better_metric_may_rise_by_at_most_its_allowance(log_loss: float, passed: bool) -> None:
    """log_loss is lower-is-better: a rise beyond the allowance is the regression, a fall is an improvement."""
    verdict = evaluate_gate(candidate(log_loss=log_loss), CHAMPION, GATE)
    check = checks(verdict)["log_loss", "no regression"]
    assert check.limit == pytest.approx(0.45)
    assert check.passed is passed
    assert verdict.passed is passed


def test_without_a_champion_only_the_absolute_thresholds_decide() -> None:
    verdict = evaluate_gate(candidate(log_loss=9.0), None, GATE)
    assert [check.rule for check in verdict.checks] == ["minimum", "maximum"]
    assert verdict.passed and not verdict.has_champion


def test_a_metric_the_champion_lacks_is_not_compared() -> None:
    verdict = evaluate_gate(candidate(log_loss=9.0), {"accuracy": 0.8}, GATE)
    assert ("log_loss", "no regression") not in checks(verdict)
    assert verdict.passed


def test_a_metric_the_champion_lacks_does_not_stop_the_checks_after_it() -> None:
    verdict = evaluate_gate(candidate(log_loss=9.0), {"log_loss": 0.4}, GATE)
    assert [(check.metric, check.passed) for check in verdict.checks if check.rule == "no regression"] == [
        ("log_loss", False)
    ]
    assert not verdict.passed


@pytest.mark.parametrize("champion_value", [math.nan, math.inf, None])
def test_an_unusable_champion_metric_is_not_compared(champion_value: float | None) -> None:
    verdict = evaluate_gate(candidate(), {**CHAMPION, "log_loss": champion_value}, GATE)
    assert ("log_loss", "no regression") not in checks(verdict)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, None])
def test_a_missing_or_non_finite_candidate_metric_fails_every_rule_on_it(value: float | None) -> None:
    metrics = {**candidate(), "accuracy": value, "latency_p95_ms": value, "log_loss": value}
    verdict = evaluate_gate(metrics, CHAMPION, GATE)
    assert [(check.metric, check.rule) for check in verdict.failures] == [
        ("accuracy", "minimum"),
        ("latency_p95_ms", "maximum"),
        ("accuracy", "no regression"),
        ("log_loss", "no regression"),
    ]
    assert not verdict.passed


def test_one_failure_refuses_and_is_the_only_one_listed() -> None:
    verdict = evaluate_gate(candidate(accuracy=0.75), CHAMPION, GATE)
    assert [(check.metric, check.rule) for check in verdict.failures] == [("accuracy", "no regression")]
    assert not verdict.passed


def test_the_reason_names_the_metric_value_rule_and_limit() -> None:
    assert Check("accuracy", "minimum", 0.7, 0.61234, False).reason == "accuracy 0.6123 breaks minimum 0.7"
    assert Check("log_loss", "no regression", 0.45, math.nan, False).reason == "log_loss is missing or NaN"
    assert Check("log_loss", "no regression", 0.45, None, False).reason == "log_loss is missing or NaN"


def test_metric_value_reads_dotted_keys_and_only_numbers() -> None:
    metrics = {"accuracy": 1, "per_class": {"fresh": {"f1": 0.5}}, "flag": True, "name": "x", "nested": {"a": 1}}
    assert metric_value(metrics, "accuracy") == 1.0 and isinstance(metric_value(metrics, "accuracy"), float)
    assert metric_value(metrics, "per_class.fresh.f1") == 0.5
    assert metric_value(metrics, "per_class.rotten.f1") is None
    assert metric_value(metrics, "accuracy.deeper") is None
    assert metric_value(metrics, "flag") is None
    assert metric_value(metrics, "name") is None
    assert metric_value(metrics, "nested") is None


def test_direction_comes_from_the_metric_spec() -> None:
    assert higher_is_better("accuracy") is True
    assert higher_is_better("log_loss") is False
    assert higher_is_better("per_class.fresh.f1") is True
