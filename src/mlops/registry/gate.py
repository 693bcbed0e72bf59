"""The promotion gate: absolute thresholds, then no significant regression against the champion.

Pure functions over metric dictionaries (the form of evaluate/metrics.json) and, where both models' per-row
predictions on the same test rows are at hand, their paired bootstrap differences (mlops.stats): so the PR
report previews exactly the verdict that the deploy job enforces. `max_regression` is a non-inferiority margin:
the candidate is refused only when it is significantly worse than the champion (the 95% interval of the change
excludes 0) AND worse by more than the margin. Without differences it falls back to the margin on the values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlops import stats
from mlops.config import GateParams
from mlops.ml.spec import METRICS


def higher_is_better(metric: str) -> bool:
    return METRICS.get(metric).higher_is_better


@dataclass(frozen=True)
class Check:
    metric: str
    rule: str  # "minimum", "maximum", "no regression" (values only) or "no significant regression"
    limit: float
    value: float | None
    passed: bool
    # The 95% interval the rule looked at: of the change against the champion, or of the candidate's own score.
    interval: tuple[float, float] | None = None

    @property
    def reason(self) -> str:
        if self.value is None or math.isnan(self.value):
            return f"{self.metric} is missing or NaN"
        if self.interval is None:
            return f"{self.metric} {self.value:.4g} breaks {self.rule} {self.limit:.4g}"
        low, high = self.interval
        interval = f"95% interval {low:+.4g} to {high:+.4g}"
        return f"{self.metric} {self.value:.4g} breaks {self.rule} {self.limit:.4g} ({interval})"


@dataclass(frozen=True)
class Verdict:
    checks: list[Check]
    has_champion: bool
    regression_skipped: str | None = None  # why no regression checks were made against a champion that exists

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]


def metric_value(metrics: dict, metric: str) -> float | None:
    """The number at a dotted key of nested metrics (per_class.LABEL.f1), or None."""
    value: object = metrics
    for part in metric.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _threshold(metric: str, rule: str, limit: float, value: float | None, interval: stats.Interval | None) -> Check:
    """A minimum or maximum on the value, or, with an interval, on its worse bound (the value must clear it surely)."""
    minimum = rule == "minimum"
    judged = value
    if interval is not None:
        judged = interval.low if minimum else interval.high
    passed = _usable(judged) and (judged >= limit if minimum else judged <= limit)
    bounds = (interval.low, interval.high) if interval is not None else None
    return Check(metric, rule, limit, value, passed, bounds)


def _regression(
    metric: str, allowed: float, value: float | None, reference: float, difference: stats.Difference | None
) -> Check:
    better_up = higher_is_better(metric)
    limit = reference - allowed if better_up else reference + allowed
    if difference is None or not _usable(value):
        passed = _usable(value) and (value >= limit if better_up else value <= limit)
        return Check(metric, "no regression", limit, value, passed)
    # The values are the recorded metrics; the interval (and so significance) comes from the per-row predictions.
    judged = stats.Difference(reference, value, difference.low, difference.high, difference.paired)
    passed = judged.verdict(better_up, allowed) is not stats.Verdict.REGRESSION
    return Check(metric, "no significant regression", limit, value, passed, (difference.low, difference.high))


def evaluate_gate(
    candidate: dict,
    champion: dict | None,
    gate: GateParams,
    differences: dict[str, stats.Difference] | None = None,
    intervals: dict[str, stats.Interval] | None = None,
    skip_regression: str | None = None,
) -> Verdict:
    """Every threshold checked in order; a missing or NaN candidate metric fails its check.

    ``differences``: candidate minus champion per metric, with 95% intervals, on the same rows where possible.
    ``intervals``: the candidate's own intervals, for thresholds judged on the interval (`gate.thresholds_on`).
    ``skip_regression``: why the champion cannot be compared with (another task or data): no regression checks.
    """
    on_interval = gate.thresholds_on == "interval"
    intervals = intervals or {}
    checks: list[Check] = []
    for rule, thresholds in (("minimum", gate.minimum), ("maximum", gate.maximum)):
        for metric, limit in thresholds.items():
            interval = intervals.get(metric) if on_interval else None
            checks.append(_threshold(metric, rule, limit, metric_value(candidate, metric), interval))
    if champion is not None and skip_regression is None:
        for metric, allowed in gate.max_regression.items():
            reference = metric_value(champion, metric)
            if not _usable(reference):
                continue  # the champion lacks this metric: nothing to regress against
            difference = (differences or {}).get(metric)
            checks.append(_regression(metric, allowed, metric_value(candidate, metric), reference, difference))
    return Verdict(checks=checks, has_champion=champion is not None, regression_skipped=skip_regression)
