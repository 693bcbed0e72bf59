"""The report as GitHub-flavoured markdown: the one text that goes to the PR comment, the job summary and the file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from mlops import stats
from mlops.comparison import Headline
from mlops.ml.spec import BASELINE_NAME, METRICS
from mlops.registry.gate import Verdict
from mlops.report import plots
from mlops.report.ci_base import BaseSource
from mlops.report.diff import (
    MISSING,
    Base,
    DataDiff,
    MetricRow,
    ParamChange,
    Reproducibility,
    Snapshot,
    TaskChange,
)

REPRODUCIBILITY_MARKS = {
    "identical": "✅ reproduced: identical",
    "within tolerance": "✅ reproduced within tolerance",
    "stale": "⚠️ stale",
    "unrecorded": "⚪ not recorded",
}
VERDICT_NOTES = {
    stats.Verdict.REGRESSION: "⚠️ significant regression",
    stats.Verdict.IMPROVEMENT: "🟢 significant improvement",
    stats.Verdict.WITHIN_NOISE: "within noise",
    stats.Verdict.UNCHANGED: "unchanged",
}


@dataclass(frozen=True)
class Content:
    base: Base
    base_snapshot: Snapshot
    new_snapshot: Snapshot
    labels: list[str]
    tolerances: dict[str, float]  # report.regression_tolerance
    rows: list[MetricRow]
    verdict: Verdict
    params: list[ParamChange]
    data: DataDiff
    reproducibility: Reproducibility
    tracking: tuple[str, str | None] | None
    workflow_run_url: str | None
    images: list[tuple[str, str]]  # (relative path, title)
    headline: Headline
    task: TaskChange
    source: BaseSource
    sweep: list[str] = field(default_factory=list)  # the Sweep section's lines, when a sweep ran


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[object]], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(_cell(item) for item in line) + " |" for line in lines)


def _short(commit: str) -> str:
    return f"`{commit[:8]}`"


def _value(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isnan(value):
        return "NaN"
    return f"{value:.4f}"


def _change(row: MetricRow) -> str:
    change = row.change
    if change is None:
        return "n/a" if row.base is not None and row.new is not None else ""
    if change == 0:
        return "0"
    arrow = "▲" if change > 0 else "▼"
    colour = "🟢" if row.improved else "🔴"
    return f"{colour} {arrow} {change:+.4f}"


def _note(row: MetricRow) -> str:
    if row.base is None:
        return "new metric"
    if row.new is None:
        return "only in base" + (" ⚠️ regression" if row.regression else "")
    if math.isnan(row.new):
        return "⚠️ NaN" if row.regression or math.isnan(row.base) else "NaN"
    if row.verdict is not None:
        return VERDICT_NOTES[row.verdict]
    if row.regression:
        return "⚠️ regression (no interval)"
    if METRICS.get(row.name).machine_dependent:
        return "depends on the machine"
    return ""


def _interval(row: MetricRow) -> str:
    if row.difference is None:
        return ""
    paired = "" if row.difference.paired else " (unpaired)"
    return f"{row.difference.low:+.4f} to {row.difference.high:+.4f}{paired}"


def _comparison(content: Content) -> str:
    headline = content.headline
    if headline.differences and headline.paired:
        how = f"paired bootstrap over the same {headline.rows} test rows ({stats.RESAMPLES} resamples)"
    elif headline.differences:
        how = f"unpaired bootstrap: the test rows differ ({headline.note}), so the intervals are wider"
    elif content.base_snapshot.metrics is None:
        return ""
    else:
        how = f"by value alone, no intervals: {headline.note}"
    return f"- **Headline changes:** {how}"


def _base_source(content: Content) -> list[str]:
    source, lines = content.source, []
    if source.ci is not None:
        run = f" ([run]({source.ci.run_url}))" if source.ci.run_url else ""
        lines.append(f"- **Base results:** reproduced by CI on main at {_short(source.ci.commit)}{run}")
        if source.ci_check is not None:
            mark = REPRODUCIBILITY_MARKS[source.ci_check.status]
            lines.append(f"- **Main's committed results against CI's:** {mark}: {source.ci_check.detail}")
    if source.note:
        lines.append(f"- **Note:** {source.note}.")
    return lines


def _summary(content: Content) -> list[str]:
    verdict = content.verdict
    passed = sum(check.passed for check in verdict.checks)
    gate = (
        f"✅ would be promoted ({passed} of {len(verdict.checks)} checks pass)"
        if verdict.passed
        else f"❌ would not be promoted ({len(verdict.failures)} of {len(verdict.checks)} checks fail)"
    )
    regressions = [row.name for row in content.rows if row.regression]
    comparison = _comparison(content)
    base = content.base
    against = f"the base {_short(base.commit)} ({base.how})" if base.commit else "no base: there is no earlier commit"
    lines = [
        "## Model report",
        "",
        f"The workspace (on commit {_short(content.base.head)}, with the pipeline results it holds) against {against}.",
        "",
    ]
    if content.task.changed:
        lines += [
            f"> ⚠️ **Another task or test set than the base:** {'; '.join(content.task.reasons)}. "
            + ("Per-class comparisons are dropped, " if content.task.relabelled else "")
            + "the base's plots are not comparable and the gate preview makes no regression checks.",
            "",
        ]
    lines += [
        f"- **Gate preview:** {gate}",
        "- **Significant regressions:** " + (", ".join(f"`{name}`" for name in regressions) if regressions else "none"),
        *([comparison] if comparison else []),
        f"- **Reproducibility:** {REPRODUCIBILITY_MARKS[content.reproducibility.status]}: "
        f"{content.reproducibility.detail}",
        *_base_source(content),
    ]
    if content.tracking is not None:
        run_id, url = content.tracking
        lines.append(
            f"- **MLflow run:** [`{run_id}`]({url})"
            if url
            else f"- **MLflow run:** `{run_id}` in the runner's local store "
            "(set the `MLFLOW_TRACKING_URI` secret to get a link)"
        )
    if content.base.commit is None:
        lines += ["", "> No base to compare with: there is no earlier commit. The tables show the new numbers only."]
    elif content.base_snapshot.metrics is None:
        lines += [
            "",
            f"> The base {_short(content.base.commit)} has no committed `evaluate/metrics.json` (a first pull request, "
            "or a base that never ran the pipeline): the tables show the new numbers only.",
        ]
    return lines


def _tolerances(content: Content) -> str:
    return ", ".join(f"{name} {content.tolerances.get(name, 0.0):g}" for name in METRICS.headline)


def _metrics(content: Content) -> list[str]:
    rows = [
        [f"`{row.name}`", _value(row.base), _value(row.new), _change(row), _interval(row), _note(row)]
        for row in content.rows
    ]
    lines = [
        "### Metrics (test split)",
        "",
        _table(
            ["Metric", "Base", "New", "Change", "95% interval of the change", "Note"],
            rows,
            ["---", "---:", "---:", "---:", "---:", "---"],
        ),
        "",
        "▲/▼ is the direction of the change, 🟢 better and 🔴 worse for that metric. Only the model's headline "
        "metrics get a verdict: a significant regression or improvement when the 95% bootstrap interval of the "
        f"change excludes 0 and the change is beyond `report.regression_tolerance` ({_tolerances(content)}), "
        "otherwise within noise. The other metrics (per class, slices, size) are shown without a verdict: they are "
        f"noisier, and the gate checks size and latency. `baseline.*` is the {BASELINE_NAME} model trained on the "
        "same split.",
    ]
    mcnemar = content.headline.mcnemar
    if mcnemar is not None:
        significance = "a significant difference" if mcnemar.significant else "no significant difference"
        lines += [
            "",
            f"McNemar's exact test on the {content.headline.rows} paired test rows: {mcnemar.only_base_right} only "
            f"the base classifies correctly, {mcnemar.only_new_right} only the new model; p = {mcnemar.p_value:.3g} "
            f"({significance} in accuracy at the 5% level).",
        ]
    if content.headline.unscored and content.headline.differences:
        names = ", ".join(f"`{name}`" for name in content.headline.unscored)
        lines += ["", f"No interval for {names}: `mlops.ml.spec` declares no scorer for it, so it is judged by value."]
    only_base = [row.name for row in content.rows if row.new is None]
    only_new = [row.name for row in content.rows if row.base is None]
    if content.base_snapshot.metrics is not None and (only_base or only_new):
        lines += [
            "",
            "The base's metrics have other keys: "
            + "; ".join(
                part
                for part in (
                    f"only in base: {', '.join(f'`{name}`' for name in only_base)}" if only_base else "",
                    f"new: {', '.join(f'`{name}`' for name in only_new)}" if only_new else "",
                )
                if part
            )
            + ".",
        ]
    return lines


def _gate(content: Content) -> list[str]:
    rows = [
        [
            f"`{check.metric}`",
            check.rule,
            f"{check.limit:.4f}",
            _value(check.value),
            f"{check.interval[0]:+.4f} to {check.interval[1]:+.4f}" if check.interval else "",
            "✅ pass" if check.passed else "❌ fail",
        ]
        for check in content.verdict.checks
    ]
    if content.verdict.regression_skipped:
        champion = f"No regression checks: {content.verdict.regression_skipped}."
    elif content.verdict.has_champion:
        champion = (
            "Regression checks compare with the base: `no significant regression` fails only when the change's 95% "
            "interval excludes 0 and the change is worse than `gate.max_regression` (the interval shown is the "
            "change's); `no regression` (no predictions to put an interval on) compares the values."
        )
    else:
        champion = "No base metrics, so no regression checks here."
    return [
        "### Gate preview",
        "",
        _table(
            ["Metric", "Rule", "Limit", "New", "95% interval", "Result"],
            rows,
            ["---", "---", "---:", "---:", "---:", "---"],
        )
        if rows
        else "The gate in `params.yaml` has no thresholds.",
        "",
        f"Thresholds from `params.yaml` (`gate`). {champion} The deploy job enforces the same thresholds "
        "against the registered champion, scored on the same test data, so its verdict can differ.",
    ]


def _literal(value: object) -> str:
    return "(absent)" if value is MISSING else f"`{json.dumps(value)}`"


def _params(content: Content) -> list[str]:
    lines = ["### Params changed", ""]
    if content.base_snapshot.params is None:
        return [*lines, "The base has no `params.yaml` to compare with."]
    if not content.params:
        return [*lines, "No params changed."]
    rows = [[f"`{change.name}`", _literal(change.base), _literal(change.new)] for change in content.params]
    return [*lines, _table(["Param", "Base", "New"], rows)]


def _balance(split: dict | None, label: str) -> str:
    if not split or label not in split:
        return "—"
    share = split[label] / split["rows"] if split.get("rows") else math.nan
    return f"{split[label]} ({share:.0%})"


def _data(content: Content) -> list[str]:
    data = content.data
    lines = ["### Data", ""]
    if data.base_md5 is None:
        lines.append(f"Data: `data.dvc` md5 `{data.new_md5}` (the base has no `data.dvc` to compare with).")
    elif not data.changed:
        lines.append(f"Data unchanged (`data.dvc` md5 `{data.new_md5}`).")
    else:
        lines.append(f"Data changed: `data.dvc` md5 `{data.base_md5}` → `{data.new_md5}`.")
        if data.note:
            lines.append(f"File list unavailable ({data.note}).")
        for kind, paths in data.files.items():
            lines.append(f"- {kind}: {', '.join(f'`{path}`' for path in paths)}")
    if data.samples_new and (data.changed or data.samples_changed):
        base_samples = data.samples_base or {}
        rows = []
        for split, counts in data.samples_new.items():
            before = base_samples.get(split)
            rows.append(
                [
                    split,
                    f"{before.get('rows', '—') if before else '—'} → {counts.get('rows')}",
                    *(f"{_balance(before, label)} → {_balance(counts, label)}" for label in content.labels),
                ]
            )
        lines += ["", _table(["Split", "Rows (base → new)", *content.labels], rows)]
    return lines


def _confusion(content: Content) -> list[str]:
    new = content.new_snapshot.plots.get("confusion")
    if new is None:
        return []
    base = None if content.task.changed else content.base_snapshot.plots.get("confusion")
    after = plots.confusion_matrix(new, content.labels)
    before = plots.confusion_matrix(base, content.labels).reindex_like(after).fillna(0) if base is not None else None
    rows = []
    for actual in after.index:
        cells = []
        for predicted in after.columns:
            count = int(after.loc[actual, predicted])
            cells.append(f"{int(before.loc[actual, predicted])} → {count}" if before is not None else str(count))
        rows.append([f"**{actual}**", *cells])
    caption = "base → new" if before is not None else "new"
    if content.task.changed and "confusion" in content.base_snapshot.plots:
        caption += "; the base's is not comparable: another task or test set"
    return [
        f"Confusion matrix on the test split ({caption}; rows: actual, columns: predicted):",
        "",
        _table(["actual \\ predicted", *after.columns], rows),
    ]


def _legend(base: plots.Plots, name: str) -> str:
    return "grey: base, blue: new" if name in base else "blue: new"


def _charts(content: Content) -> list[str]:
    base, new = {} if content.task.changed else content.base_snapshot.plots, content.new_snapshot.plots
    lines: list[str] = []
    if "training" in new:
        lines += [
            "",
            plots.mermaid_training(base.get("training"), new["training"]),
            "",
            f"Loss per epoch ({_legend(base, 'training')}; the lighter line of each is the training loss, "
            "the darker one validation).",
        ]
    for name in ("roc", "precision_recall"):
        if name in new:
            caption = _legend(base, name).capitalize()
            lines += ["", plots.mermaid_curve(name, base.get(name), new[name]), "", f"{caption}."]
    return lines


def _images(content: Content) -> list[str]:
    if not content.images:
        return []
    where = (
        f"in the artifacts of [the workflow run]({content.workflow_run_url})"
        if content.workflow_run_url
        else "next to this report"
    )
    return [
        "",
        "<details><summary>Plots as PNG</summary>",
        "",
        f"The PNG files are {where}.",
        "",
        *(f"![{title}]({path})\n" for path, title in content.images),
        "</details>",
    ]


def _not_comparable(content: Content) -> list[str]:
    if not content.task.changed or not content.base_snapshot.plots:
        return []
    return ["The base's plots are not comparable (another task or test set): only the new ones are shown.", ""]


def render(content: Content) -> str:
    sections = [
        _summary(content),
        _metrics(content),
        _gate(content),
        _params(content),
        _data(content),
        ["### Plots", "", *_not_comparable(content), *_confusion(content), *_charts(content), *_images(content)],
    ]
    if content.sweep:
        sections.append(content.sweep)
    return "\n\n".join("\n".join(section) for section in sections).rstrip() + "\n"
