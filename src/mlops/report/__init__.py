"""`mlops report`: what a change did to the model, as one markdown file with its plots.

diff.py gathers both sides from git and the workspace, plots.py draws them, markdown.py writes the text.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlops.config import Params
from mlops.registry.gate import evaluate_gate
from mlops.report import diff, markdown, plots


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


def write_report(params: Params, base_rev: str | None, out: Path) -> Written:
    """Compare the workspace with ``base_rev`` and write ``out`` plus one PNG per plot beside it.

    Everything is computed and drawn in a staging directory first, so a failure leaves no partial report.
    """
    base = diff.resolve_base(base_rev)
    new = diff.in_workspace()
    old = diff.at_revision(base.commit)
    committed = diff.at_revision("HEAD")
    tolerance = params.report.regression_tolerance

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".report-", dir=out.parent) as staging:
        images = plots.render_pngs(
            old.plots, new.plots, params.data.labels, lambda name: Path(staging) / f"{out.stem}-{name}.png"
        )
        content = markdown.Content(
            base=base,
            base_snapshot=old,
            new_snapshot=new,
            labels=params.data.labels,
            tolerance=tolerance,
            rows=diff.metric_rows(old.metrics, new.metrics, tolerance),
            verdict=evaluate_gate(new.metrics, old.metrics, params.gate),
            params=diff.param_changes(old.params, new.params),
            data=diff.data_diff(base.commit, old, new),
            reproducibility=diff.reproducibility(committed, new, params.report.reproducibility_tolerance),
            tracking=diff.tracking_link(),
            workflow_run_url=_workflow_run_url(),
            images=[(image.path.name, image.title) for image in images],
        )
        (Path(staging) / out.name).write_text(markdown.render(content))
        placed = []
        for image in images:
            placed.append(out.parent / image.path.name)
            shutil.move(image.path, placed[-1])
        shutil.move(Path(staging) / out.name, out)
    return Written(out, placed, base)
