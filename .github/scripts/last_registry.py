#!/usr/bin/env python3
"""Which `registry` artifact holds the registry to carry on: the last successful deploy's or rollback's, on main.

Without a tracking server the registry (mlflow.db and mlartifacts/) lives in artifacts, carried from one
deploy or rollback to the next. This finds, in this repository, the successful run that finished last among
the Pipeline runs from a push to main and the Rollback runs dispatched on main (never a pull request's or a
fork's run) and left a `registry` artifact, and prints for $GITHUB_OUTPUT:

    run-id=N and artifact-id=M        restore that artifact
    cold-start=REASON                 there is none yet, or it expired; then also
    release=TAG                       the newest model release (a promoted champion) to rebuild it from,
                                      when there is one; else the registry starts empty (first deploy)

Any other failure (the API unreachable, an answer it cannot read) exits 1: the deploy fails closed rather
than start from an empty registry and lose the champion. Standard library and `gh` only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable

Api = Callable[[str], object]
RUNS_PER_PAGE = 30
# The workflows that write the registry, and the one event each may write it from.
WRITERS = {"pipeline.yml": "push", "rollback.yml": "workflow_dispatch"}
RELEASES_PER_PAGE = 100
RELEASE_TAG_PREFIX = "model-"  # `mlops registry pack` names a model release model-<commit>


class RestoreError(Exception):
    pass


def gh_api(path: str) -> object:
    result = subprocess.run(["gh", "api", path], capture_output=True, text=True)
    if result.returncode != 0:
        raise RestoreError(f"`gh api {path}` failed: {(result.stderr.strip() or 'no output').splitlines()[0][:200]}")
    return json.loads(result.stdout)


def latest_model_release(repository: str, api: Api) -> str | None:
    """The tag of the newest published model release, or None."""
    listed = api(f"repos/{repository}/releases?per_page={RELEASES_PER_PAGE}")
    if not isinstance(listed, list) or not all(isinstance(release, dict) for release in listed):
        raise RestoreError("the API's list of releases is not what GitHub answers")
    models = [
        release
        for release in listed
        if str(release.get("tag_name", "")).startswith(RELEASE_TAG_PREFIX)
        and not release.get("draft")
        and not release.get("prerelease")
    ]
    return max(models, key=lambda release: release.get("created_at", ""))["tag_name"] if models else None


def cold_start(repository: str, reason: str, api: Api) -> dict[str, str]:
    release = latest_model_release(repository, api)
    return {"cold-start": reason, **({"release": release} if release else {})}


def runs_on_main(repository: str, api: Api) -> list[dict]:
    """The successful runs of the registry's writers on main in this repository, the last finished first.

    Deploys and rollbacks take turns in one concurrency group, each starting from the registry the one
    before left, so the run that finished last holds the newest registry (a re-run finishes later again).
    """
    runs = []
    for workflow, event in WRITERS.items():
        listed = api(
            f"repos/{repository}/actions/workflows/{workflow}/runs"
            f"?branch=main&event={event}&status=success&per_page={RUNS_PER_PAGE}"
        )
        if not isinstance(listed, dict) or not isinstance(listed.get("workflow_runs"), list):
            raise RestoreError(f"the API's list of {workflow} runs is not what GitHub answers")
        runs += [
            run
            for run in listed["workflow_runs"]
            if run["event"] == event
            and run["head_branch"] == "main"
            and run["head_repository"]["full_name"] == repository
        ]
    return sorted(runs, key=lambda run: run["updated_at"], reverse=True)


def find(repository: str, current_run: int, api: Api) -> dict[str, str]:
    runs = [run for run in runs_on_main(repository, api) if run["id"] != current_run]
    for run in runs:
        artifacts = api(f"repos/{repository}/actions/runs/{run['id']}/artifacts?name=registry")
        if not isinstance(artifacts, dict) or not isinstance(artifacts.get("artifacts"), list):
            raise RestoreError(f"the API's artifact list of run {run['id']} is not what GitHub answers")
        if not artifacts["artifacts"]:
            continue  # a run on main that kept no registry (a team tracking server was set then)
        artifact = artifacts["artifacts"][0]
        if artifact.get("expired"):
            return cold_start(repository, f"the registry of run {run['id']} expired", api)
        return {"run-id": str(run["id"]), "artifact-id": str(artifact["id"])}
    return cold_start(repository, "no earlier deploy kept a registry", api)


def main() -> int:
    try:
        found = find(os.environ["GITHUB_REPOSITORY"], int(os.environ["GITHUB_RUN_ID"]), gh_api)
    except (RestoreError, KeyError, TypeError, ValueError) as error:
        print(f"error: cannot tell which registry to restore ({error}): failing closed", file=sys.stderr)
        return 1
    print("\n".join(f"{key}={value}" for key, value in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
