"""Is the data in the workspace the data that data.dvc recorded? A file that was truncated, edited or
half-copied must stop the pipeline, not train silently on part of the data.

`dvc repro` records whatever is in data/ into data.dvc before the stages run (even with `frozen: true`), so
the record alone cannot catch a truncated file under `dvc repro`: data that shrank since the last commit of
data.dvc is refused as well.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from mlops.errors import MlopsError
from mlops.paths import DATA_DVC_FILE


class DataVersionError(MlopsError):
    """The workspace's data differs from what its .dvc file recorded."""


def _file_md5(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "md5").hexdigest()


def _dir_md5(folder: Path) -> str:
    """DVC's hash of a folder: the md5 of its sorted JSON listing of file md5s."""
    entries = sorted(
        (
            {"md5": _file_md5(path), "relpath": path.relative_to(folder).as_posix()}
            for path in folder.rglob("*")
            if path.is_file()
        ),
        key=lambda entry: entry["relpath"].split("/"),
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _committed_outs(dvc_file: Path) -> list[dict]:
    """The outs of ``dvc_file`` as last committed to git ([] outside git or when it is not committed)."""
    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:./{dvc_file.name}"], cwd=dvc_file.parent, capture_output=True, text=True
        )
        return list(yaml.safe_load(shown.stdout)["outs"]) if shown.returncode == 0 else []
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return []


def check_data(data_path: Path, dvc_file: Path = DATA_DVC_FILE) -> None:
    """Raise DataVersionError when the output of ``dvc_file`` holding ``data_path`` differs from its record.

    Data that no .dvc file tracks (a forker not using DVC for it) is not checked.
    """
    try:
        outs = yaml.safe_load(dvc_file.read_text())["outs"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return
    target = data_path.resolve()
    for out in outs:
        tracked = (dvc_file.parent / str(out.get("path", ""))).resolve()
        if not (target == tracked or tracked in target.parents) or "md5" not in out:
            continue
        if not tracked.exists():
            return  # the loader says the file is missing, and how to fetch it
        actual = _dir_md5(tracked) if tracked.is_dir() else _file_md5(tracked)
        if actual != out["md5"]:
            shown = f"{out['path']}/" if tracked.is_dir() else str(out["path"])
            raise DataVersionError(
                f"{shown} does not match {dvc_file} (changed, truncated or partly copied): "
                f"run `dvc pull {dvc_file}` to restore it, or `dvc add {out['path']}` to record the new data"
            )
        committed = next((old for old in _committed_outs(dvc_file) if old.get("path") == out["path"]), {})
        if out.get("size") is not None and committed.get("size") is not None and out["size"] < committed["size"]:
            raise DataVersionError(
                f"{out['path']} shrank from {committed['size']} bytes (committed {dvc_file}) to {out['size']}: "
                f"if a file was truncated, run `git checkout HEAD -- {dvc_file}` and `dvc checkout {dvc_file}`; "
                f"if the smaller data is intended, commit {dvc_file} first"
            )
