"""`mlops report`: what a change did to the model, as one markdown file with its plots.

diff.py gathers both sides from git and the workspace (ci_base.py: the base as CI reproduced it on main),
mlops.comparison puts intervals on the headline changes, plots.py draws them, markdown.py writes the text.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from mlops import comparison
from mlops.config import Params
from mlops.registry.gate import evaluate_gate
from mlops.report import ci_base, diff, markdown, plots, sweep_table


@dataclass(frozen=True)
class Written:
    report: Path
    images: list[Path]
    base: diff.Base


def _workflow_run_url() -> str | None:
    """The GitHub Actions run that made this report, whose artifacts hold the PNG files."""
    server, repository, run_id = (
        os.environ.get(name) for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repository}/actions/runs/{run_id}" if server and repository and run_id else None


def _base(
    base_rev: str | None, base_results: Path | None, tolerance: float
) -> tuple[diff.Base, diff.Snapshot, ci_base.BaseSource]:
    """The base's snapshot: CI's results for main when ``base_results`` holds them, else the committed files."""
    base = diff.resolve_base(base_rev)
    if base_results is None:
        return base, diff.at_revision(base.commit), ci_base.BaseSource(None, None, None)
    ci, why_not = ci_base.read(base_results, diff.RESULT_FILES)
    if ci is None:
        note = f"CI's results for main are not available ({why_not}): compared with the committed files instead"
        return base, diff.at_revision(base.commit), ci_base.BaseSource(None, note, None)
    if not diff.commit_exists(ci.commit):
        note = (
            f"CI's commit {ci.commit[:8]} is not in this clone (fetch-depth: 0 fetches it): "
            f"params and data are compared with {base.how} {(base.commit or '')[:8]}"
        )
        return base, diff.at_revision(base.commit, ci.files), ci_base.BaseSource(ci, note, None)
    note = None
    if base.commit is not None and base.commit != ci.commit:
        note = (
            f"main has moved on since this branch's base {base.commit[:8]}: the differences include main's own changes"
        )
    ci_check = diff.reproducibility(diff.at_revision(ci.commit), diff.at_revision(ci.commit, ci.files), tolerance)
    how = f"CI's results for main at `{ci.commit[:8]}`"
    return (
        replace(base, commit=ci.commit, how=how),
        diff.at_revision(ci.commit, ci.files),
        ci_base.BaseSource(ci, note, ci_check),
    )


def write_report(params: Params, base_rev: str | None, out: Path, base_results: Path | None = None) -> Written:
    """Compare the workspace with the base and write ``out`` plus one PNG per plot beside it.

    The base is ``base_rev`` (default: the merge base with main), with CI's reproduced results for main in place
    of the committed ones when ``base_results`` holds them. Everything is computed and drawn in a staging
    directory first, so a failure leaves no partial report.
    """
    tolerances = params.report.regression_tolerance
    base, old, source = _base(base_rev, base_results, params.report.reproducibility_tolerance)
    new = diff.in_workspace()
    committed = diff.at_revision("HEAD")
    data = diff.data_diff(base.commit, old, new)
    task = diff.task_change(old, new, data) if old.metrics is not None else diff.TaskChange([], False, set())
    headline = comparison.compare(old.predictions, new.predictions)
    rows = diff.metric_rows(
        old.metrics, new.metrics, tolerances, headline.differences, task.labels if task.relabelled else None
    )
    skip = f"the base is another task or test set ({'; '.join(task.reasons)})" if task.changed else None
    verdict = evaluate_gate(new.metrics, old.metrics, params.gate, headline.differences, headline.intervals, skip)
    comparable_plots = {} if task.changed else old.plots

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=out.parent) as staging:
        images = plots.render_pngs(
            comparable_plots, new.plots, params.data.labels, lambda name: Path(staging) / f"{out.stem}-{name}.png"
        )
        content = markdown.Content(
            base=base,
            base_snapshot=old,
            new_snapshot=new,
            labels=params.data.labels,
            tolerances=tolerances,
            rows=rows,
            verdict=verdict,
            params=diff.param_changes(old.params, new.params),
            data=data,
            reproducibility=diff.reproducibility(committed, new, params.report.reproducibility_tolerance),
            tracking=diff.tracking_link(),
            workflow_run_url=_workflow_run_url(),
            images=[(image.path.name, image.title) for image in images],
            headline=headline,
            task=task,
            source=source,
            sweep=sweep_table.section(),
        )
        (Path(staging) / out.name).write_text(markdown.render(content))
        placed = []
        for image in images:
            placed.append(out.parent / image.path.name)
            shutil.move(image.path, placed[-1])
        shutil.move(Path(staging) / out.name, out)
    return Written(out, placed, base)
