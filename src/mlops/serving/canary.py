"""`mlops canary analyze`: champion against challenger on live traffic, from Prometheus.

Reads what `mlops serve` exported over a window (requests, server errors, p99 latency, feedback),
compares the challenger with the champion against params.canary and decides:

- hold: too little traffic or feedback to judge, or a variant changed version within the window;
- roll back: the challenger is worse on errors, latency or online accuracy (the `challenger` alias goes);
- promote: enough evidence and no check failed (`champion` moves to the challenger's version).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import httpx
from pydantic import ValidationError

from mlops.config import CanaryParams
from mlops.errors import MlopsError

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION = "champion"
CHALLENGER = "challenger"
VARIANTS = (CHAMPION, CHALLENGER)
# `mlops canary analyze` exits with this for roll back (1 is an error, 2 a usage mistake), so CI can react.
ROLL_BACK_EXIT_CODE = 3
QUERY_TIMEOUT_SECONDS = 10.0


class CanaryError(MlopsError):
    """Prometheus cannot answer, or the verdict cannot be applied to the registry."""


class Decision(StrEnum):
    PROMOTE = "promote"
    HOLD = "hold"
    ROLL_BACK = "roll back"


@dataclass(frozen=True)
class VariantStats:
    """One variant's traffic over the window (counts are Prometheus increase() estimates, so fractional)."""

    requests: float = 0.0
    errors: float = 0.0
    latency_p99_s: float = math.nan
    feedback: float = 0.0
    correct: float = 0.0
    versions: tuple[str, ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.feedback if self.feedback else math.nan


@dataclass(frozen=True)
class Check:
    """One comparison; ``passed`` is None when there was not enough data to make it."""

    name: str
    champion: str
    challenger: str
    limit: str
    passed: bool | None


@dataclass(frozen=True)
class Analysis:
    decision: Decision
    reason: str
    window: str
    checks: list[Check]
    stats: dict[str, VariantStats]

    @property
    def challenger_version(self) -> str | None:
        versions = self.stats[CHALLENGER].versions
        return versions[0] if len(versions) == 1 else None


def with_window(params: CanaryParams, window: str | None) -> CanaryParams:
    """params.canary with the window overridden, validated like params.yaml."""
    if window is None:
        return params
    try:
        return CanaryParams.model_validate({**params.model_dump(), "window": window})
    except ValidationError:
        raise CanaryError(f"--window {window!r} is not a duration like 90s, 10m or 1h: fix the option") from None


def queries(window: str, by: str = "variant", matchers: str = "") -> dict[str, str]:
    """The PromQL behind each statistic, grouped by the label ``by``, over the series that ``matchers`` select.

    `mlops canary analyze` groups by variant (champion and challenger models in one server); the Kubernetes
    image canary (deploy/k8s) selects new or stable pods by their pod-template hash and groups by nothing.
    """

    def series(metric: str, labels: str = "") -> str:
        selected = ",".join(part for part in (labels, matchers) if part)
        return f"{metric}{{{selected}}}" if selected else metric

    requests, errors = series("mlops_requests_total"), series("mlops_requests_total", 'status=~"5.."')
    feedback, correct = series("mlops_feedback_total"), series("mlops_feedback_total", 'correct="true"')
    latency_by = ", ".join(part for part in (by, "le") if part)
    return {
        "requests": f"sum by ({by}) (increase({requests}[{window}]))",
        "errors": f"sum by ({by}) (increase({errors}[{window}]))",
        "latency_p99_s": (
            f"histogram_quantile(0.99, sum by ({latency_by}) "
            f"(rate({series('mlops_request_latency_seconds_bucket')}[{window}])))"
        ),
        "feedback": f"sum by ({by}) (increase({feedback}[{window}]))",
        "correct": f"sum by ({by}) (increase({correct}[{window}]))",
        "versions": f"max by ({', '.join(part for part in (by, 'version') if part)}) "
        f"(max_over_time({series('mlops_model_info')}[{window}]))",
    }


def instant_query(client: httpx.Client, prometheus_url: str, promql: str) -> list[dict]:
    try:
        response = client.get(f"{prometheus_url.rstrip('/')}/api/v1/query", params={"query": promql})
    except httpx.HTTPError as error:
        raise CanaryError(
            f"cannot reach Prometheus at {prometheus_url} ({type(error).__name__}: {error}): "
            "start it or fix --prometheus-url"
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "status" not in body:
        raise CanaryError(
            f"{prometheus_url} did not answer like Prometheus (HTTP {response.status_code} on /api/v1/query): "
            "fix --prometheus-url"
        )
    if body["status"] != "success":
        raise CanaryError(f"Prometheus at {prometheus_url} rejected {promql!r}: {body.get('error', 'no reason given')}")
    return body["data"]["result"]


def collect(prometheus_url: str, window: str) -> dict[str, VariantStats]:
    """Both variants' statistics over ``window``, ending now; a variant without traffic has zeros."""
    fields: dict[str, dict[str, object]] = {variant: {} for variant in VARIANTS}
    with httpx.Client(timeout=QUERY_TIMEOUT_SECONDS) as client:
        for field, promql in queries(window).items():
            for sample in instant_query(client, prometheus_url, promql):
                variant = sample["metric"].get("variant")
                if variant not in fields:
                    continue
                if field == "versions":
                    found = fields[variant].setdefault("versions", ())
                    fields[variant]["versions"] = (*found, sample["metric"].get("version", ""))
                else:
                    fields[variant][field] = float(sample["value"][1])
    return {variant: VariantStats(**values) for variant, values in fields.items()}


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2%}"


def _milliseconds(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value * 1000:.1f} ms"


def decide(stats: dict[str, VariantStats], params: CanaryParams, window: str | None = None) -> Analysis:
    """The verdict from both variants' statistics: rules in the module docstring."""
    champion, challenger = stats[CHAMPION], stats[CHALLENGER]
    window = window or params.window
    enough_traffic = min(champion.requests, challenger.requests) >= params.min_requests
    checks = [
        Check(
            "requests",
            f"{champion.requests:.0f}",
            f"{challenger.requests:.0f}",
            f">= {params.min_requests} each",
            True if enough_traffic else None,
        )
    ]

    error_increase = challenger.error_rate - champion.error_rate
    checks.append(
        Check(
            "error rate",
            _percent(champion.error_rate),
            _percent(challenger.error_rate),
            f"<= champion + {params.max_error_rate_increase:.2%}",
            error_increase <= params.max_error_rate_increase if enough_traffic else None,
        )
    )

    latency_ratio = challenger.latency_p99_s / champion.latency_p99_s if champion.latency_p99_s > 0 else math.nan
    checks.append(
        Check(
            "p99 latency",
            _milliseconds(champion.latency_p99_s),
            _milliseconds(challenger.latency_p99_s),
            f"<= champion x {params.max_latency_p99_ratio:g}",
            latency_ratio <= params.max_latency_p99_ratio if enough_traffic and not math.isnan(latency_ratio) else None,
        )
    )

    min_feedback = max(params.min_feedback, 1)
    enough_feedback = min(champion.feedback, challenger.feedback) >= min_feedback
    accuracy_drop = champion.accuracy - challenger.accuracy
    checks.append(
        Check(
            "online accuracy",
            f"{_percent(champion.accuracy)} of {champion.feedback:.0f}",
            f"{_percent(challenger.accuracy)} of {challenger.feedback:.0f}",
            f">= champion - {params.max_accuracy_drop:.2%}, >= {params.min_feedback} labels each",
            accuracy_drop <= params.max_accuracy_drop if enough_feedback else None,
        )
    )
    checks.append(
        Check(
            "version",
            ", ".join(champion.versions) or "n/a",
            ", ".join(challenger.versions) or "n/a",
            "one each",
            True if len(champion.versions) == len(challenger.versions) == 1 else None,
        )
    )

    failed = [check.name for check in checks if check.passed is False]
    if not enough_traffic:
        decision, reason = Decision.HOLD, f"fewer than {params.min_requests} requests per variant in {window}"
    elif len(challenger.versions) != 1 or len(champion.versions) != 1:
        decision, reason = Decision.HOLD, f"a variant served more than one version (or none) in {window}"
    elif failed:
        decision, reason = Decision.ROLL_BACK, f"the challenger is worse on {' and '.join(failed)}"
    elif champion.feedback < params.min_feedback or challenger.feedback < params.min_feedback:
        decision, reason = Decision.HOLD, f"fewer than {params.min_feedback} feedback labels per variant in {window}"
    else:
        decision, reason = Decision.PROMOTE, "the challenger is as good as the champion on every check"
    return Analysis(decision, reason, window, checks, stats)


def analyze(prometheus_url: str, params: CanaryParams) -> Analysis:
    return decide(collect(prometheus_url, params.window), params)


def apply(analysis: Analysis, client: MlflowClient, name: str, via: str) -> str:
    """Move the registry aliases as the verdict says (recorded in the alias history); what was done, as one sentence."""
    from mlops.registry import registry  # MLflow is slow to import: only when the registry is used

    if analysis.decision is Decision.HOLD:
        return "hold: the registry is unchanged"
    served = analysis.challenger_version
    registered = registry.aliases(client, name).get(registry.CHALLENGER)
    if registered != served:
        raise CanaryError(
            f"the registry's challenger for {name!r} is version {registered} but the server served version "
            f"{served} in the window: wait for the server to reload the alias and analyze again"
        )
    why = f"canary {analysis.decision.value} over {analysis.window}: {analysis.reason}"
    if analysis.decision is Decision.PROMOTE:
        registry.promote(client, name, served, via, why)
        return f"promoted version {served} of {name!r} to champion"
    registry.retire_challenger(client, name, via, why)
    return f"removed the challenger alias from version {served} of {name!r}: the champion serves all traffic"


def format_table(analysis: Analysis) -> str:
    """The verdict line, then one row per check with both variants' numbers and the limit."""
    header = ("check", CHAMPION, CHALLENGER, "limit", "result")
    rows = [
        (
            check.name,
            check.champion,
            check.challenger,
            check.limit,
            {True: "ok", False: "FAIL", None: "wait"}[check.passed],
        )
        for check in analysis.checks
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = [f"canary verdict over {analysis.window}: {analysis.decision.value.upper()} ({analysis.reason})"]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)
