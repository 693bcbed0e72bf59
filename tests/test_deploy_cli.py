"""`mlops gate`, `deploy`, `rollback` through the command line on a real sqlite store: the tables, the summary, the
exit codes, the guard against re-promoting a rolled-back version, racing deploys and the champion's stored scores."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import BIN, run
from mlops.registry import registry
from mlops.registry.champion import SCORES_TAG_PREFIX
from registry_project import NAME, copy_project, error_lines, new_candidate, snapshot

pytestmark = pytest.mark.slow


@pytest.fixture
def project(pipeline_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The trained tiny project with an empty embedded store (sqlite:///mlflow.db in the project)."""
    project = copy_project(pipeline_project, tmp_path / "project")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    return project


def client_of(project: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def test_gate_and_deploy_print_the_table_write_the_summary_and_a_refusal_exits_1(project: Path) -> None:
    summary = project / "summary.md"
    new_candidate(project)
    gate = run(["mlops", "gate"], project)
    assert "| metric | rule | limit | candidate | champion | 95% interval | result |" in gate.stdout
    assert gate.stdout.rstrip().endswith("the gate passed")
    deployed = run(["mlops", "deploy", "--summary", str(summary)], project)
    assert f"version 1 of {NAME} registered and promoted to champion" in deployed.stdout
    written = summary.read_text()
    assert written.startswith("## Deploy\n\nversion 1 of")
    assert "Gate passed against absolute thresholds (no champion):" in written and "| accuracy | minimum |" in written

    # Clearly worse than the champion: confidently wrong, so its log loss rises significantly (on the tiny split
    # a near-chance model's accuracy drop is not significant).
    new_candidate(project, negate=True, confidence=20.0)
    before = snapshot(client_of(project), NAME)
    for command in (["mlops", "gate"], ["mlops", "deploy", "--summary", str(summary)]):
        refused = run(command, project, check=False)
        assert refused.returncode == 1
        [error] = error_lines(refused.stderr)
        assert error.startswith("error: the gate refused the candidate: ") and "log_loss" in error
        assert "breaks no significant regression" in error
        [row] = [
            line for line in refused.stdout.splitlines() if line.startswith("| log_loss | no significant regression |")
        ]
        assert row.endswith("| **FAIL** |")
    refusal = summary.read_text().removeprefix(written)
    assert refusal.startswith("## Deploy\n\n**Refused**: the gate refused the candidate: ")
    assert "registry unchanged." in refusal and "Gate failed against champion v1:" in refusal
    assert snapshot(client_of(project), NAME) == before


def test_rollback_command_restores_the_champion_and_deploy_will_not_promote_the_rolled_back_version_again(
    project: Path,
) -> None:
    client = client_of(project)
    new_candidate(project, negate=True)
    run(["mlops", "deploy"], project)
    new_candidate(project, negate=True)  # the original weights: better, promoted
    run(["mlops", "deploy"], project)
    assert registry.aliases(client, NAME)["champion"] == "2"

    rolled_back = run(["mlops", "rollback", "--why", "complaints"], project)
    assert rolled_back.stdout.strip() == f"rolled back: version 1 of {NAME} is the champion again"
    assert registry.aliases(client, NAME) == {"dev": "2", "staging": "2", "champion": "1"}
    last = registry.history(client, NAME)[-2:]
    assert [(move.alias, move.before, move.after, move.via, move.why) for move in last] == [
        ("champion", "2", "1", "mlops rollback", "complaints"),
        ("previous-champion", "1", None, "mlops rollback", "complaints"),
    ]

    before = snapshot(client, NAME)
    again = run(["mlops", "deploy"], project, check=False)  # the same commit as version 2
    assert again.returncode == 1
    assert error_lines(again.stderr) == [
        f"error: version 2 of {NAME} (this run or commit) was rolled back, so deploy will not promote it again: "
        "train a new model, or run `mlops promote 2` if you are sure"
    ]
    assert snapshot(client, NAME) == before


def test_two_deploys_of_one_commit_started_together_register_one_version(project: Path) -> None:
    client = client_of(project)
    for round_number in (1, 2):
        new_candidate(project, negate=round_number == 1)
        racers = [
            subprocess.Popen(
                [str(BIN / "mlops"), "deploy"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        outputs = [racer.communicate(timeout=600) for racer in racers]
        for racer, (stdout, stderr) in zip(racers, outputs, strict=True):
            assert racer.returncode == 0, stdout + stderr
        assert [str(version.version) for version in registry.versions(client, NAME)] == [
            str(number) for number in range(round_number, 0, -1)
        ]
        assert registry.aliases(client, NAME)["champion"] == str(round_number)


def test_a_champion_is_rescored_only_when_its_scores_for_this_test_split_are_missing(project: Path) -> None:
    client = client_of(project)
    new_candidate(project, negate=True)
    run(["mlops", "deploy"], project)
    [scores] = [tag for tag in client.get_model_version(NAME, "1").tags if tag.startswith(SCORES_TAG_PREFIX)]
    stored = json.loads(client.get_model_version(NAME, "1").tags[scores])

    # Scores missing (as after a data, split or metric-code change): the champion is loaded and re-scored.
    client.delete_model_version_tag(NAME, "1", scores)
    new_candidate(project, negate=True)
    run(["mlops", "deploy", "--to", "staging"], project)
    rescored = json.loads(client.get_model_version(NAME, "1").tags[scores])
    assert rescored["accuracy"] == pytest.approx(stored["accuracy"], abs=1e-4)
    assert rescored["macro_f1"] == pytest.approx(stored["macro_f1"], abs=1e-4)

    # Scores stored: deploy never loads the champion, so it works even with the champion's files gone.
    champion_files = Path(client.get_model_version(NAME, "1").source)
    hidden = champion_files.with_name("hidden")
    champion_files.rename(hidden)
    try:
        new_candidate(project)
        deployed = run(["mlops", "deploy"], project)
        assert (
            "promoted to champion" in deployed.stdout and "| accuracy | no significant regression |" in deployed.stdout
        )
    finally:
        hidden.rename(champion_files)
