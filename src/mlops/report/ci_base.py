"""The base as CI reproduced it on main: the `pipeline-results` artifact of the latest successful main run.

The Pipeline workflow downloads it into a folder holding `evaluate/` (metrics, plots, predictions), `dvc.lock`
and `source.json` ({"commit", "run_url", "run_id"}). Anything wrong with the folder is a note, never an error:
the report then compares with main's committed files instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mlops.paths import METRICS_FILE
from mlops.report.diff import Reproducibility

SOURCE_FILE = Path("source.json")


@dataclass(frozen=True)
class CiResults:
    files: dict[Path, str | None]  # the result files, by their path in the project; None where absent
    commit: str
    run_url: str | None


def _read(path: Path) -> str | None:
    try:
        return path.read_text() if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def read(folder: Path, result_files: list[Path]) -> tuple[CiResults | None, str]:
    """``result_files`` as found in ``folder``, or None and why they cannot be used (then: a note in the report)."""
    if not folder.is_dir():
        return None, f"`{folder}` does not exist (no successful run on main to download, or the download failed)"
    if not any(folder.iterdir()):
        return None, f"`{folder}` is empty (no successful run on main to download, or the download failed)"
    try:
        source = json.loads((folder / SOURCE_FILE).read_text())
        commit = str(source["commit"])
    except (OSError, ValueError, TypeError, KeyError):
        return None, f"`{folder / SOURCE_FILE}` is missing or has no commit: the artifact is not `pipeline-results`"
    files = {path: _read(folder / path) for path in result_files}
    try:
        json.loads(files[METRICS_FILE] or "")
    except ValueError:
        return None, f"`{folder / METRICS_FILE}` is missing or not valid JSON"
    run_url = source.get("run_url")
    return CiResults(files, commit, str(run_url) if run_url else None), ""


@dataclass(frozen=True)
class BaseSource:
    """Where the base's results came from, for the report's first lines."""

    ci: CiResults | None
    note: str | None  # why CI's results were not used, or what to know about them
    ci_check: Reproducibility | None  # CI's results on main against main's committed ones
