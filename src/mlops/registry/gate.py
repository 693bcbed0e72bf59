"""The promotion gate: absolute thresholds, then no regression against the champion.

Pure functions over metric dictionaries (the form of evaluate/metrics.json), so the PR
report can preview exactly the verdict that the deploy job will enforce.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlops.config import GateParams
from mlops.ml.spec import METRICS


def higher_is_better(metric: str) -> bool:
    return METRICS.get(metric).higher_is_better


@dataclass(frozen=True)
class Check:
    metric: str
    rule: str  # "minimum", "maximum" or "no regression"
    limit: float
    value: float | None
    passed: bool

    @property
    def reason(self) -> str:
        if self.value is None or math.isnan(self.value):
            return f"{self.metric} is missing or NaN"
        return f"{self.metric} {self.value:.4g} breaks {self.rule} {self.limit:.4g}"


@dataclass(frozen=True)
class Verdict:
    checks: list[Check]
    has_champion: bool

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


def evaluate_gate(candidate: dict, champion: dict | None, gate: GateParams) -> Verdict:
    """Every threshold checked in order; a missing or NaN candidate metric fails its check."""
    checks: list[Check] = []
    for metric, limit in gate.minimum.items():
        value = metric_value(candidate, metric)
        checks.append(Check(metric, "minimum", limit, value, _usable(value) and value >= limit))
    for metric, limit in gate.maximum.items():
        value = metric_value(candidate, metric)
        checks.append(Check(metric, "maximum", limit, value, _usable(value) and value <= limit))
    if champion is not None:
        for metric, allowed in gate.max_regression.items():
            value, reference = metric_value(candidate, metric), metric_value(champion, metric)
            if not _usable(reference):
                continue  # the champion lacks this metric: nothing to regress against
            if higher_is_better(metric):
                limit = reference - allowed
                passed = _usable(value) and value >= limit
            else:
                limit = reference + allowed
                passed = _usable(value) and value <= limit
            checks.append(Check(metric, "no regression", limit, value, passed))
    return Verdict(checks=checks, has_champion=champion is not None)
