"""The artifact stand-ins' work: an artifact is the folder $STANDIN_ARTIFACTS/<run id>/<name>.

`upload` lays files out as actions/upload-artifact does (relative to the deepest folder holding every
match; hidden files left out unless asked; an existing name is an error unless `overwrite`), and sets the
`artifact-id` and `artifact-url` outputs. `download` copies one into its path, failing on a missing one.
"""

import os
import shutil
import sys
import zlib
from pathlib import Path

SERVER = "https://github.com"


def store(run_id: str) -> Path:
    return Path(os.environ["STANDIN_ARTIFACTS"]) / run_id


def output(**values: str) -> None:
    with open(os.environ["GITHUB_OUTPUT"], "a") as outputs:
        outputs.writelines(f"{key}={value}\n" for key, value in values.items())


def matches(workspace: Path, pattern: str, hidden: bool) -> list[Path]:
    path = workspace / pattern
    if path.is_file():
        return [path]
    files = sorted(child for child in path.rglob("*") if child.is_file()) if path.is_dir() else []
    return [f for f in files if hidden or not any(part.startswith(".") for part in f.relative_to(path).parts)]


def upload() -> int:
    workspace, name = Path(os.environ["GITHUB_WORKSPACE"]), os.environ["NAME"]
    patterns = [line.strip() for line in os.environ["PATHS"].splitlines() if line.strip()]
    hidden = os.environ.get("INCLUDE_HIDDEN") == "true"
    found = {pattern: matches(workspace, pattern, hidden) for pattern in patterns}
    files = [file for listed in found.values() for file in listed]
    if not files:
        message = f"No files were found with the provided path: {', '.join(patterns)}. No artifacts will be uploaded."
        if os.environ["IF_NO_FILES_FOUND"] == "error":
            print(f"::error::{message}")
            return 1
        print(f"::warning::{message}")
        return 0
    roots = [
        (workspace / pattern) if (workspace / pattern).is_dir() else (workspace / pattern).parent
        for pattern, listed in found.items()
        if listed
    ]
    root = Path(os.path.commonpath(roots))
    target = store(os.environ["GITHUB_RUN_ID"]) / name
    if target.exists():
        if os.environ.get("OVERWRITE") != "true":
            print("::error::Failed to CreateArtifact: an artifact with this name already exists on the workflow run")
            return 1
        shutil.rmtree(target)
    for file in files:
        destination = target / file.relative_to(root)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, destination)
    artifact_id = str(zlib.crc32(f"{os.environ['GITHUB_RUN_ID']}/{name}".encode()))
    (target.parent / f"{name}.id").write_text(artifact_id)
    repository, run_id = os.environ["GITHUB_REPOSITORY"], os.environ["GITHUB_RUN_ID"]
    output(
        **{
            "artifact-id": artifact_id,
            "artifact-url": f"{SERVER}/{repository}/actions/runs/{run_id}/artifacts/{artifact_id}",
        }
    )
    return 0


def download() -> int:
    run_id, name = os.environ.get("RUN_ID") or os.environ["GITHUB_RUN_ID"], os.environ["NAME"]
    if os.environ.get("RUN_ID") and not os.environ.get("TOKEN"):
        print("::error::a github-token is needed to download another run's artifact")
        return 1
    source = store(run_id) / name
    if not source.is_dir():
        print(f"::error::Unable to download artifact(s): Artifact not found for name: {name}")
        return 1
    destination = Path(os.environ["GITHUB_WORKSPACE"]) / os.environ.get("DESTINATION", ".")
    shutil.copytree(source, destination, dirs_exist_ok=True)
    output(**{"download-path": str(destination)})
    return 0


if __name__ == "__main__":
    sys.exit({"upload": upload, "download": download}[sys.argv[1]]())
