"""`mlops sweep`: try several settings of params.yaml, one `dvc exp run` after another, and keep the best.

sweep.yaml (beside params.yaml) declares the trials (a grid or a list of overrides), a budget and the metric
that chooses among them, read from each trial's training history on the validation split: choosing on the test
split would make the test numbers reported for the winner optimistic. Every trial is an MLflow run nested in
one parent run (and one W&B group); a failed trial is recorded with its error and the sweep goes on. The best
trial is applied to the workspace (`dvc exp apply`), so the usual report and gate judge it; when none succeeds
the workspace is put back as it was.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import mlflow
from pydantic import Field, ValidationError, field_validator, model_validator

from mlops import comparison, tracking
from mlops.config import ConfigError, Name, Params, PositiveInt, Section, _describe, _read_mapping
from mlops.dotted import flatten
from mlops.errors import MlopsError
from mlops.paths import (
    EVALUATE_DIR,
    HISTORY_FILE,
    LOCK_FILE,
    MODELS_DIR,
    PARAMS_FILE,
    PREDICTIONS_FILE,
    PRETRAINED_DIR,
    RUN_FILE,
    SWEEP_FILE,
    SWEEP_RESULTS,
)

SELECTION_PREFIX = "validation_"
Scalar = bool | int | float | str | None


class SweepError(MlopsError):
    """sweep.yaml is invalid, or the sweep cannot start."""


class Selection(Section):
    metric: Annotated[Name, Field(description="a column of models/history.json measured on the validation split")]
    goal: Literal["max", "min"]

    @field_validator("metric")
    @classmethod
    def _on_the_validation_split(cls, metric: str) -> str:
        if not metric.startswith(SELECTION_PREFIX):
            raise ValueError(
                f"{metric!r} is not measured on the validation split: choose one starting with {SELECTION_PREFIX!r} "
                "(choosing on the test split makes the winner's test numbers optimistic)"
            )
        return metric


class SweepSpec(Section):
    budget: PositiveInt  # the most trials the sweep may run
    select: Selection
    grid: dict[Name, Annotated[list[Scalar], Field(min_length=1)]] | None = None
    trials: Annotated[list[dict[Name, Scalar]], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _one_way_to_list_trials(self) -> SweepSpec:
        if (self.grid is None) == (self.trials is None):
            raise ValueError("give either grid (every combination) or trials (a list of overrides), not both")
        return self

    def overrides(self) -> list[dict[str, Scalar]]:
        """Every trial's overrides, duplicates dropped, refused when they exceed the budget."""
        if self.grid is not None:
            keys = list(self.grid)
            listed = [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]
        else:
            listed = [dict(trial) for trial in self.trials or []]
        unique = [trial for index, trial in enumerate(listed) if trial not in listed[:index]]
        if len(unique) > self.budget:
            raise SweepError(
                f"{SWEEP_FILE}: {len(unique)} trials are more than the budget of {self.budget}: "
                "raise budget or list fewer values"
            )
        return unique


@dataclass
class Trial:
    name: str
    overrides: dict[str, Scalar]
    status: Literal["ok", "failed"] = "failed"
    error: str | None = None
    selection: float | None = None  # the validation metric
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # headline metric: value, low, high
    seconds: float = 0.0
    run_id: str | None = None


@dataclass
class Results:
    metric: str
    goal: str
    parent_run_id: str
    trials: list[Trial]
    best: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def load_spec(path: Path = SWEEP_FILE) -> SweepSpec:
    if not path.exists():
        raise SweepError(f"{path} not found: declare the sweep there (the README's Sweeps section shows how)")
    try:
        return SweepSpec.model_validate(_read_mapping(path), strict=True)
    except ValidationError as error:
        raise SweepError(_describe(error, path)) from None
    except ConfigError as error:
        raise SweepError(str(error)) from None


def check_overrides(raw_params: dict, trials: list[dict[str, Scalar]], path: Path = PARAMS_FILE) -> None:
    """Refuse, before anything runs, an override of a param that does not exist or a value params.yaml refuses."""
    known = flatten(raw_params)
    for number, overrides in enumerate(trials, start=1):
        changed = copy.deepcopy(raw_params)
        for key, value in overrides.items():
            if key not in known:
                raise SweepError(
                    f"{SWEEP_FILE}: trial {number} overrides {key!r}, which is not a param of {path}: "
                    "check its spelling (a dotted key such as train.learning_rate)"
                )
            *sections, leaf = key.split(".")
            target = changed
            for section in sections:
                target = target[section]
            target[leaf] = value
        try:
            Params.model_validate_json(json.dumps(changed, default=str), strict=True)
        except ValidationError as error:
            raise SweepError(f"{SWEEP_FILE}: trial {number} {overrides}: {_describe(error, path)}") from None


def check_metric(metric: str, history_file: Path = HISTORY_FILE) -> None:
    """When a model is already trained, its history says which metrics exist: a typo fails before any trial."""
    if not history_file.exists():
        return
    rows = json.loads(history_file.read_text())
    columns = sorted({key for row in rows for key in row if key.startswith(SELECTION_PREFIX)})
    if rows and metric not in rows[0]:
        raise SweepError(
            f"{SWEEP_FILE}: select.metric {metric!r} is not in {history_file} (it has {', '.join(columns)}): "
            "pick one of those"
        )


def selection_value(history: list[dict[str, float]], metric: str, goal: str) -> float:
    """The best epoch's value of ``metric``; MlopsError when it is missing or not a number (a NaN loss)."""
    if not history:
        raise MlopsError(f"{HISTORY_FILE} has no epochs")
    if any(not math.isfinite(value) for row in history for value in row.values()):
        raise MlopsError(f"the training history has a NaN or infinite value ({HISTORY_FILE}): the training diverged")
    values = [row[metric] for row in history if metric in row]
    if not values:
        raise MlopsError(f"{HISTORY_FILE} has no {metric!r}")
    return max(values) if goal == "max" else min(values)


def _one_line_error(output: str) -> str:
    """The CLI's own `error: ...` line when there is one, else DVC's last ERROR line, else the last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for prefix in ("error: ", "ERROR: "):
        found = [line for line in lines if line.startswith(prefix)]
        if found:
            return found[-1].removeprefix(prefix)[:300]
    return (lines[-1] if lines else "failed with no output")[:300]


def _headline_intervals() -> dict[str, dict[str, float]]:
    text = PREDICTIONS_FILE.read_text() if PREDICTIONS_FILE.exists() else None
    intervals = comparison.compare(None, text).intervals
    return {name: asdict(interval) for name, interval in intervals.items()}


def _dvc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], capture_output=True, text=True, env={**os.environ, **(env or {})})


def _run_trial(trial: Trial, spec: SweepSpec, parent_run_id: str, params_text: bytes) -> None:
    PARAMS_FILE.write_bytes(params_text)  # each trial starts from the sweep's params, not the last trial's
    settings = [f"{key}={json.dumps(value)}" for key, value in trial.overrides.items()]
    started = time.monotonic()
    done = _dvc(
        "exp",
        "run",
        "--name",
        trial.name,
        *itertools.chain.from_iterable(("--set-param", setting) for setting in settings),
        env={tracking.SWEEP_PARENT_ENV: parent_run_id, tracking.SWEEP_TRIAL_ENV: trial.name},
    )
    trial.seconds = round(time.monotonic() - started, 1)
    if done.returncode != 0:
        trial.error = _one_line_error(done.stdout + "\n" + done.stderr)
        return
    try:
        trial.run_id = json.loads(RUN_FILE.read_text())["run_id"]
        trial.selection = selection_value(json.loads(HISTORY_FILE.read_text()), spec.select.metric, spec.select.goal)
        trial.test = _headline_intervals()
    except (MlopsError, OSError, KeyError, ValueError) as error:
        trial.error = str(error).splitlines()[0]
        return
    trial.status = "ok"


def best_trial(trials: list[Trial], goal: str) -> Trial | None:
    finished = [trial for trial in trials if trial.status == "ok" and trial.selection is not None]
    if not finished:
        return None
    pick = max if goal == "max" else min
    return pick(finished, key=lambda trial: trial.selection)


class _Workspace:
    """A copy of what a sweep changes (params, lock, pretrained encoder, models, evaluate), put back when no trial
    wins."""

    PATHS = (PARAMS_FILE, LOCK_FILE, PRETRAINED_DIR, MODELS_DIR, EVALUATE_DIR)

    def __init__(self, folder: Path):
        self.folder = folder
        for path in self.PATHS:
            if path.is_dir():
                shutil.copytree(path, folder / path, symlinks=True)
            elif path.exists():
                shutil.copy2(path, folder / path)

    def restore(self) -> None:
        for path in self.PATHS:
            saved = self.folder / path
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            if saved.is_dir():
                shutil.copytree(saved, path, symlinks=True)
            elif saved.exists():
                shutil.copy2(saved, path)


def run_sweep(
    spec: SweepSpec,
    params: Params,
    results_file: Path = SWEEP_RESULTS,
    on_trial: Callable[[Trial], None] = lambda trial: None,
) -> Results:
    """Run every trial, apply the best to the workspace and write ``results_file``; the workspace as before when
    every trial fails."""
    raw_params = _read_mapping(PARAMS_FILE)
    planned = spec.overrides()
    check_overrides(raw_params, planned)
    check_metric(spec.select.metric)
    if shutil.which("dvc") is None:
        raise SweepError("dvc is not on PATH: install the project (pip install -e .) and run from its root")
    if _dvc("exp", "show", "--no-pager", "--json").returncode != 0:
        raise SweepError("`dvc exp` cannot run here: run from the root of a git repository with a commit and DVC")

    tracking.connect(create=True, writes=True)
    mlflow.set_experiment(params.tracking.experiment)
    with mlflow.start_run(run_name="sweep", tags={"sweep.metric": spec.select.metric}) as parent:
        parent_id = parent.info.run_id
        prefix = f"sweep-{parent_id[:8]}"
        trials = [Trial(f"{prefix}-{number}", overrides) for number, overrides in enumerate(planned, start=1)]
        results = Results(spec.select.metric, spec.select.goal, parent_id, trials)
        params_text = PARAMS_FILE.read_bytes()
        with tempfile.TemporaryDirectory(prefix="mlops-sweep-") as saved:
            workspace = _Workspace(Path(saved))
            try:
                for trial in trials:
                    _run_trial(trial, spec, parent_id, params_text)
                    on_trial(trial)
            except BaseException:  # interrupted (Ctrl-C, a cancelled CI job): no trial half-applied
                workspace.restore()
                raise
            best = best_trial(trials, spec.select.goal)
            if best is None:
                workspace.restore()
            else:
                applied = _dvc("exp", "apply", best.name)
                if applied.returncode != 0:
                    workspace.restore()
                    raise SweepError(f"`dvc exp apply {best.name}` failed: {_one_line_error(applied.stderr)}")
                results.best = best.name
        if best is not None:
            mlflow.log_metric(f"best.{spec.select.metric}", best.selection)
            mlflow.set_tag("sweep.best_run_id", best.run_id or "")
        mlflow.log_dict(results.to_json(), "sweep/results.json")
    results_file.parent.mkdir(parents=True, exist_ok=True)
    results_file.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    return results
