"""What the bench scripts share: a quiet offline environment, a copy of the repository, timed commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {
    **{key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"},
    "HF_HUB_OFFLINE": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def sh(*command: str, cwd: Path) -> None:
    subprocess.run(command, cwd=cwd, env=ENV, check=True, capture_output=True, text=True)


def timed(*command: str, cwd: Path) -> float:
    """Wall time of a command; a failure stops the bench with the command's output."""
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return seconds


def copy_repository(target: Path) -> None:
    """This checkout's files as they are now (committed or not, ignored ones left out) under ``target``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-rows", type=int, default=None, help="subsample the data [default: all rows]")
    parser.add_argument("--epochs", type=int, default=None, help="[default: params.yaml's]")


@contextlib.contextmanager
def training_project(prefix: str, args: argparse.Namespace) -> Iterator[tuple[Path, dict]]:
    """A scratch copy of the repository with the data and the pretrained encoder pulled, and its params sized by
    --max-rows and --epochs (the caller writes them back after its own changes)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        project = Path(scratch)
        copy_repository(project)
        sh("git", "init", "-q", "-b", "main", cwd=project)
        sh("dvc", "pull", "-q", "data.dvc", "pretrain", cwd=project)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["data"]["max_rows"] = args.max_rows
        params["train"]["epochs"] = args.epochs or params["train"]["epochs"]
        params["train"]["progress_bar"] = False
        yield project, params
