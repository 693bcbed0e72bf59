#!/usr/bin/env python3
"""The sticky pull-request comment: which pull request a Pipeline run belongs to, and what may be posted on it.

comment.yml runs this with the runner's python3 (standard library only), from the default branch: nothing
from the pull request is installed or run. The report in the artifact was written by the pull request's code,
so it is data to sanitise, and the number in it is a claim to check against the run GitHub describes.

    pr_comment.py comment --event EVENT.json --report-dir DIR --out COMMENT.md
        Writes the comment and prints `pr=N` for $GITHUB_OUTPUT; prints nothing when it must not post,
        after saying why on stderr (for the job summary). Exits 1 when the artifact claims another PR.
    pr_comment.py summary REPORT.md --artifact-url URL
        Prints the report as the job summary shows it (images replaced by links to the artifact).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

WATERMARK_TITLE = "mlops model report"
# GitHub refuses comments over 65,536 characters; leave room for CML's watermark and our own lines.
MAX_CHARS = 60_000
# Tags the report itself uses; without attributes they can neither load nor hide anything.
ALLOWED_TAGS = re.compile(r"</?(?:details|summary)>")
MENTION = re.compile(r"(?<![\w@/`])@(?=[A-Za-z0-9])")
LOCAL_TARGET = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:|#)([^)\s]+)\)", re.IGNORECASE)
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

Api = Callable[[str], object]


class Refused(Exception):
    """Nothing may be posted; the message says why. ``fails`` marks what must fail the job, not just skip it."""

    fails = False


class Forged(Refused):
    """The pull request named for this run is not the one it was built from."""

    fails = True


class ApiFailed(Refused):
    fails = True


def gh_api(path: str) -> object:
    result = subprocess.run(["gh", "api", path], capture_output=True, text=True)
    if result.returncode != 0:
        raise ApiFailed(f"`gh api {path}` failed: {(result.stderr.strip() or 'no output').splitlines()[0][:200]}")
    return json.loads(result.stdout)


def neutralise(markdown: str, artifact_url: str | None) -> str:
    """Raw HTML escaped (but <details>/<summary>), @mentions defused, images turned into links to the artifact."""
    kept: list[str] = []

    def keep(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return f"\0{len(kept) - 1}\0"

    text = ALLOWED_TAGS.sub(keep, markdown.replace("\0", ""))
    text = text.replace("<", "&lt;")
    text = re.sub(r"\0(\d+)\0", lambda match: kept[int(match.group(1))], text)
    text = MENTION.sub("@&#8203;", text)
    # Local files are not where the comment is shown, and a remote image is the pull request's choice of
    # content: every image becomes a link, and links to local files point at the artifact.
    text = text.replace("![", "[")
    return LOCAL_TARGET.sub(lambda match: f"]({artifact_url})" if artifact_url else "]", text)


def cap(markdown: str, limit: int, full_report_url: str) -> str:
    """At most ``limit`` characters, cut at a line, with open code fences and <details> closed and a note."""
    if len(markdown) <= limit:
        return markdown
    note = (
        f"\n\n> [!NOTE]\n> The report was cut at {limit:,} of its {len(markdown):,} characters (GitHub's comment "
        f"limit is 65,536). The whole report is in [the artifact]({full_report_url})."
    )
    cut = markdown[: max(0, limit - len(note) - 40)]
    cut = cut[: cut.rfind("\n") + 1] if "\n" in cut else ""
    fence = None
    for line in cut.splitlines():
        opened = FENCE.match(line)
        if opened and fence is None:
            fence = opened.group(1)[0]
        elif opened and opened.group(1)[0] == fence:
            fence = None
    closing = "```\n" if fence == "`" else "~~~\n" if fence == "~" else ""
    closing += "</details>\n" * max(0, cut.count("<details>") - cut.count("</details>"))
    return cut + closing + note.lstrip("\n") + "\n"


def header(run: dict) -> str:
    repository, sha = run["head_repository"]["full_name"], run["head_sha"]
    return (
        f"> Built by [Pipeline run {run['id']}]({run['html_url']}) from `{repository}` at `{sha}`. "
        "What follows was written by that code and is shown as data.\n\n"
    )


def comment_text(run: dict, report: str, artifact_url: str | None) -> str:
    top = header(run)
    body = neutralise(report, artifact_url)
    return top + cap(body, MAX_CHARS - len(top), artifact_url or run["html_url"])


def failure_text(run: dict) -> str:
    return (
        "### Model report\n\n"
        f"The Pipeline run for `{run['head_repository']['full_name']}` at `{run['head_sha']}` ended "
        f"**{run['conclusion']}**, so there is no report for this commit; an earlier report was removed so that it "
        f"is not read as this one's. See [the run]({run['html_url']}).\n"
    )


def _claimed_number(report_dir: Path | None) -> int | None:
    claim = report_dir / "pr-number" if report_dir else None
    if claim is None or not claim.is_file():
        return None
    text = claim.read_text()[:20].strip()
    if not re.fullmatch(r"[1-9][0-9]{0,9}", text):
        raise Forged(f"the artifact's pr-number {text!r} is not a pull request number: nothing posted")
    return int(text)


def resolve_pull_request(run: dict, repository: str, claimed: int | None, api: Api) -> int:
    """The open pull request whose head is the run's head repository and SHA.

    GitHub names it in ``pull_requests`` for a pull request from this repository; for a fork that list is empty,
    so the artifact's claim is checked, or, when there is none (a run that failed early), the open pull
    requests of the head branch are searched.
    """
    head_repository, head_sha = run["head_repository"]["full_name"], run["head_sha"]
    if run.get("pull_requests"):
        number = int(run["pull_requests"][0]["number"])
    elif claimed is not None:
        number = claimed
    else:
        owner = run["head_repository"]["owner"]["login"]
        found = api(f"repos/{repository}/pulls?state=open&head={owner}:{run['head_branch']}")
        matching = [pull for pull in found if pull["head"]["sha"] == head_sha] if isinstance(found, list) else []
        if not matching:
            raise Refused(f"no open pull request has head {head_repository}@{head_sha}: nothing posted")
        number = int(matching[0]["number"])
    pull = api(f"repos/{repository}/pulls/{number}")
    assert isinstance(pull, dict)
    if pull["head"]["repo"] is None or pull["head"]["repo"]["full_name"] != head_repository:
        raise Forged(f"pull request #{number}'s head repository is not this run's {head_repository}: nothing posted")
    if pull["state"] != "open":
        raise Refused(f"pull request #{number} is {pull['state']}: nothing posted")
    if pull["head"]["sha"] != head_sha:
        if claimed is not None and not run.get("pull_requests"):
            raise Forged(
                f"pull request #{number}'s head is {pull['head']['sha']}, not this run's {head_sha}: nothing posted"
            )
        raise Refused(f"pull request #{number} moved on to {pull['head']['sha']} since {head_sha}: nothing posted")
    return number


def artifact_url(run: dict, repository: str, name: str, api: Api) -> str | None:
    listed = api(f"repos/{repository}/actions/runs/{run['id']}/artifacts?name={name}")
    artifacts = listed.get("artifacts", []) if isinstance(listed, dict) else []
    return f"{run['html_url']}/artifacts/{artifacts[0]['id']}" if artifacts else None


def comment(event: Path, report_dir: Path | None, out: Path, api: Api = gh_api) -> int:
    run = json.loads(event.read_text())["workflow_run"]
    repository = os.environ["GITHUB_REPOSITORY"]
    succeeded = run["conclusion"] == "success"
    number = resolve_pull_request(run, repository, _claimed_number(report_dir) if succeeded else None, api)
    if succeeded:
        assert report_dir is not None
        report = (report_dir / "report.md").read_text(errors="replace")
        out.write_text(comment_text(run, report, artifact_url(run, repository, "model-report", api)))
    else:
        out.write_text(failure_text(run))
    return number


def main() -> int:
    parser = argparse.ArgumentParser(prog="pr_comment.py")
    commands = parser.add_subparsers(dest="command", required=True)
    post = commands.add_parser("comment")
    post.add_argument("--event", type=Path, required=True)
    post.add_argument("--report-dir", type=Path)
    post.add_argument("--out", type=Path, required=True)
    summary = commands.add_parser("summary")
    summary.add_argument("report", type=Path)
    summary.add_argument("--artifact-url")
    arguments = parser.parse_args()

    if arguments.command == "summary":
        print(neutralise(arguments.report.read_text(), arguments.artifact_url or None), end="")
        return 0
    try:
        number = comment(arguments.event, arguments.report_dir, arguments.out)
    except Refused as refused:
        print(f"error: {refused}" if refused.fails else str(refused), file=sys.stderr)
        return 1 if refused.fails else 0
    print(f"pr={number}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
