"""What deploy writes for people: the gate table, the model card, the version's tags and the job summary."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from mlops import tracking
from mlops.config import Params
from mlops.ml.spec import BASELINE_NAME, CARD_TEMPLATE, METRICS
from mlops.registry.gate import higher_is_better, metric_value

if TYPE_CHECKING:
    from mlops.registry.deploy import GateResult


def params_hash(params: Params) -> str:
    return hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def gate_summary(result: GateResult) -> str:
    against = f"champion v{result.champion_version}" if result.champion_version else "absolute thresholds (no champion)"
    return f"{'passed' if result.verdict.passed else 'failed'} against {against}"


def version_tags(params: Params, result: GateResult, commit: str) -> dict[str, str]:
    tags = {
        "git_commit": commit,
        "data_version": tracking.data_version(),
        "params_hash": params_hash(params),
        "gate": gate_summary(result),
        "gate_checks": "; ".join(
            f"{check.metric} {check.rule} {check.limit:.4g}: {check.value:.4g}" for check in result.verdict.checks
        ),
    }
    for metric in METRICS.on_card:
        value = metric_value(result.candidate, metric)
        if value is not None:
            tags[f"metric.{metric}"] = f"{value:.4f}"
    return tags


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _bounds(interval: tuple[float, float] | None, signed: bool = False) -> str:
    if interval is None:
        return "-"
    low, high = interval
    return f"{low:+.4f} to {high:+.4f}" if signed else f"{low:.4f} to {high:.4f}"


def gate_table(result: GateResult) -> str:
    """The checks as a Markdown table (what the CLI prints and the job summary shows), with the 95% interval each
    check looked at: the change against the champion for regressions, the candidate's own for thresholds."""
    rows = [
        "| metric | rule | limit | candidate | champion | 95% interval | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for check in result.verdict.checks:
        champion = metric_value(result.champion, check.metric) if result.champion else None
        interval = _bounds(check.interval, signed=check.rule == "no significant regression")
        rows.append(
            f"| {check.metric} | {check.rule} | {check.limit:.4g} | {_cell(check.value)} | {_cell(champion)} "
            f"| {interval} | {'pass' if check.passed else '**FAIL**'} |"
        )
    note = result.headline.note if result.champion is not None else None
    return "\n".join(rows) + (f"\n\nNo paired intervals against the champion: {note}." if note else "")


def model_card(params: Params, result: GateResult, commit: str) -> str:
    """The version's description: intended use, data, metrics against baseline and champion, limitations."""
    metrics = result.candidate
    baseline = metrics.get("baseline", {})
    samples = metrics.get("samples", {})
    previous = f"champion v{result.champion_version}" if result.champion_version else "previous champion (none)"
    rows = [
        f"| metric | this model | 95% interval | baseline ({BASELINE_NAME}) | {previous} | change (95% interval) |",
        "|---|---|---|---|---|---|",
    ]
    headline = result.headline
    for metric in METRICS.on_card:
        direction = "higher" if higher_is_better(metric) else "lower"
        champion = metric_value(result.champion, metric) if result.champion else None
        interval = headline.intervals.get(metric)
        difference = headline.differences.get(metric)
        change = f"{difference.change:+.4f} ({difference.low:+.4f} to {difference.high:+.4f})" if difference else "-"
        rows.append(
            f"| {metric} ({direction} is better) | {_cell(metric_value(metrics, metric))} "
            f"| {_bounds((interval.low, interval.high) if interval else None)} "
            f"| {_cell(metric_value(baseline, metric))} | {_cell(champion)} | {change} |"
        )
    split_sizes = ", ".join(f"{split} {counts.get('rows', '?')}" for split, counts in samples.items())
    prose = CARD_TEMPLATE.read_text().format(
        labels=" or ".join(params.data.labels),
        max_length=params.model.max_length,
        registered_model=params.tracking.registered_model,
    )
    return "\n".join(
        [
            f"# {params.tracking.registered_model}",
            "",
            prose.strip(),
            "",
            f"**Data**: `{params.data.path}` (DVC md5 {tracking.data_version()}), split "
            + (f"by `{params.data.group_column}`, no group in two splits" if params.data.group_column else "by row")
            + f"; rows: {split_sizes or 'unknown'}.",
            f"Trained at commit `{commit}` with params hash `{params_hash(params)}`.",
            "",
            "**Metrics** on the test split, with 95% bootstrap intervals over its rows (the change against the "
            "champion is paired: both models scored on the same rows):",
            "",
            *rows,
            "",
            f"**Gate**: {gate_summary(result)}.",
        ]
    )


def summary_markdown(result: GateResult | None, outcome: str) -> str:
    """What the deploy job writes to its GitHub job summary."""
    parts = ["## Deploy", "", outcome, ""]
    if result is not None:
        parts += [f"Gate {gate_summary(result)}:", "", gate_table(result), ""]
    parts.append(f"Registry: `{tracking.tracking_uri()}`")
    return "\n".join(parts) + "\n"
