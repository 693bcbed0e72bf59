"""`mlops sweep`: sweep.yaml checked before anything runs, trials run for real with `dvc exp run` in a copy of the
repository (tiny params), the best by the validation metric applied, and the report's Sweep section."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from conftest import BIN, REPO_ROOT, run, tiny_params, write_params
from mlops import sweep
from mlops.config import _read_mapping
from mlops.errors import MlopsError
from mlops.report import sweep_table

CHANGED_BY_A_SWEEP = ("params.yaml", "dvc.lock", "models", "evaluate")
# More than the training rows of the tiny data (and within params.yaml's bounds): `mlops train` refuses it.
CRASHING_BATCH_SIZE = 4000


def spec(**fields: object) -> sweep.SweepSpec:
    declared = {"budget": 4, "select": {"metric": "validation_accuracy", "goal": "max"}, "grid": {"seed": [1, 2]}}
    return sweep.SweepSpec.model_validate({**declared, **fields})


def state(folder: Path) -> dict[str, str]:
    """md5 of every file a refused or wholly failed sweep must leave alone."""
    paths = [path for name in CHANGED_BY_A_SWEEP for path in sorted([folder / name, *(folder / name).rglob("*")])]
    return {
        str(path.relative_to(folder)): hashlib.md5(path.read_bytes()).hexdigest() for path in paths if path.is_file()
    }


def test_a_grid_lists_every_combination_once() -> None:
    grid = {"train.learning_rate": [0.001, 0.003], "train.epochs": [1, 2]}
    assert spec(grid=grid).overrides() == [
        {"train.learning_rate": 0.001, "train.epochs": 1},
        {"train.learning_rate": 0.001, "train.epochs": 2},
        {"train.learning_rate": 0.003, "train.epochs": 1},
        {"train.learning_rate": 0.003, "train.epochs": 2},
    ]
    assert spec(grid=None, trials=[{"seed": 1}, {"seed": 1}, {"seed": 2}]).overrides() == [{"seed": 1}, {"seed": 2}]


def test_a_grid_bigger_than_the_budget_is_refused() -> None:
    with pytest.raises(sweep.SweepError, match="5 trials are more than the budget of 4"):
        spec(grid={"seed": [1, 2, 3, 4, 5]}).overrides()


def test_choosing_on_anything_but_the_validation_split_is_refused() -> None:
    with pytest.raises(ValueError, match="not measured on the validation split"):
        spec(select={"metric": "accuracy", "goal": "max"})


def test_a_grid_and_a_list_of_trials_together_are_refused() -> None:
    with pytest.raises(ValueError, match=r"either grid .* or trials"):
        spec(trials=[{"seed": 1}])


def test_an_override_of_an_unknown_param_is_refused_naming_it() -> None:
    raw = _read_mapping(REPO_ROOT / "params.yaml")
    with pytest.raises(sweep.SweepError, match=r"trial 2 overrides 'train\.learnig_rate', which is not a param"):
        sweep.check_overrides(raw, [{"train.learning_rate": 0.001}, {"train.learnig_rate": 0.001}])
    with pytest.raises(sweep.SweepError, match=r"train\.learning_rate: Input should be less than or equal to 1"):
        sweep.check_overrides(raw, [{"train.learning_rate": 5.0}])


def test_a_selection_metric_the_history_does_not_have_is_refused(tmp_path: Path) -> None:
    history = tmp_path / "history.json"
    history.write_text(json.dumps([{"epoch": 1, "train_loss": 0.7, "validation_accuracy": 0.6}]))
    with pytest.raises(sweep.SweepError, match=r"'validation_acc' is not in .* \(it has validation_accuracy\)"):
        sweep.check_metric("validation_acc", history)


def test_the_best_epoch_counts_and_a_nan_loss_fails_the_trial() -> None:
    history = [
        {"epoch": 1, "train_loss": 0.7, "validation_loss": 0.6, "validation_accuracy": 0.6},
        {"epoch": 2, "train_loss": 0.5, "validation_loss": 0.65, "validation_accuracy": 0.7},
    ]
    assert sweep.selection_value(history, "validation_accuracy", "max") == 0.7
    assert sweep.selection_value(history, "validation_loss", "min") == 0.6
    with pytest.raises(MlopsError, match="NaN or infinite value"):
        sweep.selection_value([{**history[0], "train_loss": math.nan}], "validation_accuracy", "max")


def test_the_best_trial_is_chosen_by_the_goal_among_those_that_finished() -> None:
    trials = [
        sweep.Trial("a", {}, "ok", selection=0.6),
        sweep.Trial("b", {}, "failed", error="boom"),
        sweep.Trial("c", {}, "ok", selection=0.7),
    ]
    assert sweep.best_trial(trials, "max").name == "c"
    assert sweep.best_trial(trials, "min").name == "a"
    assert sweep.best_trial(trials[1:2], "max") is None


def test_the_last_error_line_of_a_failed_trial_is_recorded() -> None:
    output = "Running stage 'train':\n> mlops train\nerror: batch too big: lower it\nERROR: failed to reproduce"
    assert sweep._one_line_error(output) == "batch too big: lower it"
    assert sweep._one_line_error("ERROR: failed to reproduce 'train'") == "failed to reproduce 'train'"


def test_the_report_section_lists_every_trial_and_warns_when_the_workspace_moved_on(tmp_path: Path) -> None:
    interval = {"value": 0.75, "low": 0.7, "high": 0.8}
    results = {
        "metric": "validation_accuracy",
        "goal": "max",
        "parent_run_id": "p",
        "best": "t-1",
        "trials": [
            {"name": "t-1", "overrides": {"seed": 1}, "status": "ok", "error": None, "selection": 0.8,
             "test": {"accuracy": interval}, "seconds": 12.0, "run_id": "r1"},
            {"name": "t-2", "overrides": {"seed": 2}, "status": "failed", "error": "a | b", "selection": None,
             "test": {}, "seconds": 1.0, "run_id": None},
        ],
    }  # fmt: skip
    path, run_file = tmp_path / "results.json", tmp_path / "run.json"
    path.write_text(json.dumps(results))
    run_file.write_text(json.dumps({"run_id": "r1"}))
    lines = sweep_table.section(path, run_file)
    assert lines[0] == "### Sweep"
    assert "| **t-1** ⭐ | `seed=1` | 0.8000 | 0.7500 [0.7000, 0.8000] |" in "\n".join(lines)
    assert "| t-2 | `seed=2` | — | — |" in "\n".join(lines) and "❌ failed: a \\| b |" in lines[-1]
    assert not any("stale" in line for line in lines)
    run_file.write_text(json.dumps({"run_id": "retrained"}))
    assert any("stale" in line for line in sweep_table.section(path, run_file))
    assert sweep_table.section(tmp_path / "none.json", run_file) == []


def mlops(project: Path, *args: str, check: bool = True):
    return run([str(BIN / "mlops"), *args], project, check=check)


def write_sweep(project: Path, trials: list[dict]) -> None:
    declared = {"budget": 4, "select": {"metric": "validation_accuracy", "goal": "max"}, "trials": trials}
    (project / "sweep.yaml").write_text(yaml.safe_dump(declared, sort_keys=False))


@pytest.fixture
def project(pipeline_project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pipeline_project, tmp_path / "project", symlinks=True))


@pytest.mark.slow
def test_a_refused_sweep_runs_nothing_and_changes_nothing(project: Path) -> None:
    before = state(project)
    write_sweep(project, [{"train.learning_rate": 0.001}, {"train.epoch": 3}])
    refused = mlops(project, "sweep", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("error: sweep.yaml: trial 2 overrides 'train.epoch'")
    assert state(project) == before
    assert run(["dvc", "exp", "list", "--name-only"], project).stdout.strip() == ""


@pytest.mark.slow
@pytest.mark.heavy
def test_a_sweep_whose_every_trial_fails_leaves_the_workspace_as_it_was(project: Path) -> None:
    before = state(project)
    write_sweep(project, [{"train.batch_size": CRASHING_BATCH_SIZE}, {"train.batch_size": CRASHING_BATCH_SIZE + 1}])
    failed = mlops(project, "sweep", check=False)
    assert failed.returncode == 1
    assert "every trial failed" in failed.stderr
    assert state(project) == before
    results = json.loads((project / "sweep" / "results.json").read_text())
    assert [trial["status"] for trial in results["trials"]] == ["failed", "failed"]
    assert all("train.batch_size" in trial["error"] for trial in results["trials"])


@pytest.mark.slow
@pytest.mark.heavy
def test_a_sweep_records_every_trial_applies_the_best_by_validation_and_the_report_shows_it(project: Path) -> None:
    rates = [0.0003, 0.003, 0.01]
    write_params(project, tiny_params(data={"max_rows": 400}, evaluate={"latency_requests": 5}))  # 3 trainings
    write_sweep(
        project, [*({"train.learning_rate": rate} for rate in rates), {"train.batch_size": CRASHING_BATCH_SIZE}]
    )
    mlops(project, "sweep")

    results = json.loads((project / "sweep" / "results.json").read_text())
    trials = results["trials"]
    assert [trial["overrides"] for trial in trials][:3] == [{"train.learning_rate": rate} for rate in rates]
    assert [trial["status"] for trial in trials] == ["ok", "ok", "ok", "failed"]
    assert "train.batch_size 4000 is more than the" in trials[3]["error"]
    finished = trials[:3]
    best = max(finished, key=lambda trial: trial["selection"])
    assert results["best"] == best["name"]
    for trial in finished:
        assert set(trial["test"]) >= {"accuracy", "macro_f1"}
        assert (
            trial["test"]["accuracy"]["low"] <= trial["test"]["accuracy"]["value"] <= trial["test"]["accuracy"]["high"]
        )

    # The workspace is the best trial's: its params, and the model whose history gave its validation metric.
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["train"]["learning_rate"] == best["overrides"]["train.learning_rate"]
    assert params["train"]["batch_size"] == tiny_params()["train"]["batch_size"]
    history = json.loads((project / "models" / "history.json").read_text())
    assert max(row["validation_accuracy"] for row in history) == best["selection"]
    assert json.loads((project / "models" / "run.json").read_text())["run_id"] == best["run_id"]
    assert run(["dvc", "status", "--json"], project).stdout.strip() == "{}"

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    for trial in finished:
        logged = client.get_run(trial["run_id"])
        assert logged.data.tags["mlflow.parentRunId"] == results["parent_run_id"]
        assert logged.data.tags["sweep.trial"] == trial["name"]
    parent = client.get_run(results["parent_run_id"])
    assert parent.data.tags["sweep.best_run_id"] == best["run_id"]

    mlops(project, "report", "--base", "HEAD")
    report = (project / "report" / "report.md").read_text()
    section = report[report.index("### Sweep") :]
    for trial in trials:
        assert trial["name"] in section
    assert f"**{best['name']}** ⭐" in section
    assert "❌ failed: train.batch_size 4000" in section
