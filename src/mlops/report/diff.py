"""What changed between the base revision and the workspace: params, data, metrics, plots, reproducibility.

The base is read from git (`git show REV:path`), so any revision works without checking it out;
a base that lacks a file, or has other keys in it, yields "absent" rather than an error.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pandas as pd
import yaml

from mlops import stats
from mlops.dotted import flatten, numeric_leaves
from mlops.errors import MlopsError
from mlops.ml.spec import METRICS
from mlops.paths import DATA_DVC_FILE, LOCK_FILE, METRICS_FILE, PARAMS_FILE, PLOTS_DIR, PREDICTIONS_FILE, RUN_FILE
from mlops.registry.gate import higher_is_better

# The columns each plot needs; a file without them (another version's format) counts as absent.
PLOT_COLUMNS = {
    "confusion": {"actual", "predicted"},
    "roc": {"fpr", "tpr"},
    "precision_recall": {"recall", "precision"},
    "training": {"epoch", "train_loss", "validation_loss"},
}
PLOT_NAMES = tuple(PLOT_COLUMNS)
MAIN_BRANCHES = ("main", "origin/main")
LISTED_DIFFERENCES = 5


class ReportError(MlopsError):
    """The report cannot be built from this checkout."""


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise ReportError("git is not installed: the report compares against git history, install git") from None


def _commit(rev: str) -> str | None:
    result = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    return result.stdout.strip() if result.returncode == 0 else None


def read_at(commit: str, paths: list[Path]) -> dict[Path, str | None]:
    """Files' text at a commit (None where it lacks one), in one `git cat-file --batch` call."""
    request = "".join(f"{commit}:{path.as_posix()}\n" for path in paths).encode()
    output = subprocess.run(["git", "cat-file", "--batch"], input=request, capture_output=True, check=True).stdout
    files: dict[Path, str | None] = {}
    position = 0
    for path in paths:
        end = output.index(b"\n", position)
        header = output[position:end].split()  # "<oid> blob <size>", or "<name> missing"
        position = end + 1
        files[path] = None
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            files[path] = output[position : position + size].decode()
            position += size + 1
    return files


@dataclass(frozen=True)
class Base:
    head: str  # the commit the workspace is on
    commit: str | None  # None: nothing to compare with (a first commit)
    how: str  # how it was chosen, for the report's first line


def resolve_base(rev: str | None) -> Base:
    """``rev`` as given; by default the merge base with main, or the previous commit on main itself."""
    head = _commit("HEAD")
    if head is None:
        raise ReportError("no git commit here: run `mlops report` inside a clone of the project, after a commit")
    if rev is not None:
        commit = _commit(rev)
        if commit is None:
            raise ReportError(
                f"base revision {rev!r} does not exist in this repository: fetch it (`git fetch origin {rev}`, "
                "or actions/checkout with fetch-depth: 0) or pass another --base"
            )
        return Base(head, commit, f"`{rev}`")
    for branch in MAIN_BRANCHES:
        if _commit(branch) is None:
            continue
        merge_base = _git("merge-base", "HEAD", branch).stdout.strip()
        if merge_base and merge_base != head:
            return Base(head, merge_base, f"the merge base with `{branch}`")
        break
    return Base(head, _commit("HEAD~1"), "the previous commit")


def _json(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _yaml(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return value if isinstance(value, dict) else None


def _csv(text: str | None) -> pd.DataFrame | None:
    if text is None:
        return None
    try:
        return pd.read_csv(io.StringIO(text))
    except (ValueError, pd.errors.ParserError):
        return None


@dataclass(frozen=True)
class Snapshot:
    """One side of the comparison: what a revision (or the workspace) holds. Anything may be absent."""

    metrics: dict | None
    params: dict | None
    data_dvc: dict | None
    lock: dict | None
    plots: dict[str, pd.DataFrame] = field(default_factory=dict)
    predictions: str | None = None  # evaluate/predictions.csv as text, parsed where it is compared


# What the pipeline produced (CI's base results hold these), and the inputs read from git beside them.
RESULT_FILES = [METRICS_FILE, LOCK_FILE, PREDICTIONS_FILE, *(PLOTS_DIR / f"{name}.csv" for name in PLOT_NAMES)]
SNAPSHOT_FILES = [PARAMS_FILE, DATA_DVC_FILE, *RESULT_FILES]


def _snapshot(files: dict[Path, str | None]) -> Snapshot:
    plots = {name: _csv(files[PLOTS_DIR / f"{name}.csv"]) for name in PLOT_NAMES}
    return Snapshot(
        metrics=_json(files[METRICS_FILE]),
        params=_yaml(files[PARAMS_FILE]),
        data_dvc=_yaml(files[DATA_DVC_FILE]),
        lock=_yaml(files[LOCK_FILE]),
        plots={
            name: frame
            for name, frame in plots.items()
            if frame is not None and PLOT_COLUMNS[name] <= set(frame.columns) and len(frame)
        },
        predictions=files[PREDICTIONS_FILE],
    )


def at_revision(commit: str | None, results: dict[Path, str | None] | None = None) -> Snapshot:
    """The files at ``commit``, with ``results`` (CI's pipeline results for it) in place of the committed ones."""
    if commit is None:
        return Snapshot(None, None, None, None)
    return _snapshot({**read_at(commit, SNAPSHOT_FILES), **(results or {})})


def commit_exists(rev: str) -> bool:
    return _commit(rev) is not None


def in_workspace() -> Snapshot:
    snapshot = _snapshot({path: path.read_text() if path.is_file() else None for path in SNAPSHOT_FILES})
    if snapshot.metrics is None:
        raise ReportError(f"{METRICS_FILE} is missing or not valid JSON: run `dvc repro` before `mlops report`")
    return snapshot


@dataclass(frozen=True)
class MetricRow:
    name: str
    base: float | None  # None: the base does not have this metric
    new: float | None
    higher_is_better: bool
    regression: bool  # a significant regression beyond the tolerance (by value alone where there is no interval)
    difference: stats.Difference | None = None  # headline metrics: the change with its 95% interval
    verdict: stats.Verdict | None = None

    @property
    def change(self) -> float | None:
        if self.base is None or self.new is None or not math.isfinite(self.base) or not math.isfinite(self.new):
            return None
        return self.new - self.base

    @property
    def improved(self) -> bool | None:
        change = self.change
        if not change:
            return None
        return (change > 0) == self.higher_is_better


def _quality_metrics(metrics: dict | None) -> dict[str, float]:
    return {
        key: value
        for key, value in numeric_leaves(metrics).items()
        if not key.startswith("samples.") and not METRICS.get(key).count
    }


def _worse_by_value(before: float, after: float | None, higher_is_better: bool, tolerance: float) -> bool:
    """Without an interval: missing, NaN, or worse by more than the tolerance."""
    if after is None or not math.isfinite(after):
        return math.isfinite(before)
    if not math.isfinite(before):
        return False
    return ((before - after) if higher_is_better else (after - before)) > tolerance


def metric_rows(
    base: dict | None,
    new: dict,
    tolerances: dict[str, float],
    differences: dict[str, stats.Difference] | None = None,
    dropped_labels: set[str] | None = None,
) -> list[MetricRow]:
    """Every quality metric of either side, the workspace's order first.

    Only the model's headline metrics get a verdict: with ``differences`` (their 95% intervals) a regression must
    be significant and beyond its tolerance (0 where none is given); without, it is judged by value. Other
    metrics (per class, slices, size) are shown with their change and no verdict: a fixed tolerance on them flags
    noise. ``dropped_labels``:
    labels whose per-class base metrics no longer apply (the task changed); nothing is judged then.
    """
    differences = differences or {}
    base_flat, new_flat = _quality_metrics(base), _quality_metrics(new)
    if dropped_labels is not None:
        base_flat = {key: value for key, value in base_flat.items() if not set(key.split(".")) & dropped_labels}
    rows = []
    for name in [*new_flat, *(key for key in base_flat if key not in new_flat)]:
        before, after = base_flat.get(name), new_flat.get(name)
        better_up, tolerance = higher_is_better(name), tolerances.get(name, 0.0)
        judged = name in METRICS.headline and before is not None and dropped_labels is None
        difference, verdict, flagged = differences.get(name), None, False
        if judged and difference is not None and after is not None and math.isfinite(before) and math.isfinite(after):
            # Values as recorded in metrics.json; the interval (so the significance) from the per-row predictions.
            difference = stats.Difference(before, after, difference.low, difference.high, difference.paired)
            verdict = difference.verdict(better_up, tolerance)
            flagged = verdict is stats.Verdict.REGRESSION
        elif judged:
            difference, flagged = None, _worse_by_value(before, after, better_up, tolerance)
        else:
            difference = None
        rows.append(MetricRow(name, before, after, better_up, flagged, difference, verdict))
    return rows


@dataclass(frozen=True)
class TaskChange:
    """What makes the base a different task or test set: said at the top, and no regression is judged."""

    reasons: list[str]
    relabelled: bool  # labels or label column changed: per-class metrics and plots no longer compare
    labels: set[str]  # every label of either side

    @property
    def changed(self) -> bool:
        return bool(self.reasons)


def task_change(base: Snapshot, new: Snapshot, data: DataDiff) -> TaskChange:
    base_data, new_data = (base.params or {}).get("data") or {}, (new.params or {}).get("data") or {}
    reasons = []
    if base.params is not None:
        for key in ("labels", "label_column"):
            if base_data.get(key) != new_data.get(key):
                reasons.append(f"`data.{key}` {json.dumps(base_data.get(key))} → {json.dumps(new_data.get(key))}")
    relabelled = bool(reasons)
    if data.base_md5 is not None and data.changed:
        reasons.append(f"data version `{data.base_md5}` → `{data.new_md5}`")
    labels = {str(label) for label in [*(base_data.get("labels") or []), *(new_data.get("labels") or [])]}
    return TaskChange(reasons, relabelled, labels)


@dataclass(frozen=True)
class ParamChange:
    name: str
    base: object  # MISSING when the key is new
    new: object  # MISSING when the key was removed


MISSING = object()


def param_changes(base: dict | None, new: dict | None) -> list[ParamChange]:
    base_flat, new_flat = flatten(base), flatten(new)
    names = [*new_flat, *(key for key in base_flat if key not in new_flat)]
    return [
        ParamChange(name, base_flat.get(name, MISSING), new_flat.get(name, MISSING))
        for name in names
        if base_flat.get(name, MISSING) != new_flat.get(name, MISSING)
    ]


@dataclass(frozen=True)
class DataDiff:
    base_md5: str | None
    new_md5: str | None
    files: dict[str, list[str]]  # dvc diff: added/deleted/modified/renamed -> paths
    note: str | None  # why the file list is unavailable
    samples_base: dict | None
    samples_new: dict | None

    @property
    def changed(self) -> bool:
        return self.base_md5 != self.new_md5

    @property
    def samples_changed(self) -> bool:
        return self.samples_base != self.samples_new


def _data_md5(data_dvc: dict | None) -> str | None:
    try:
        return str(data_dvc["outs"][0]["md5"])
    except (TypeError, KeyError, IndexError):
        return None


def _dvc_diff(base_commit: str) -> tuple[dict[str, list[str]], str | None]:
    try:
        result = subprocess.run(
            ["dvc", "diff", "--json", "--targets", DATA_DVC_FILE.stem, "--", base_commit],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        return {}, "dvc is not installed"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        return {}, f"`dvc diff` failed: {lines[-1] if lines else 'no output'}"
    changes = json.loads(result.stdout or "{}")
    files = {
        kind: sorted(str(entry["path"]) for entry in entries)
        for kind, entries in changes.items()
        if entries and kind != "not in cache"
    }
    return files, None


def data_diff(base_commit: str | None, base: Snapshot, new: Snapshot) -> DataDiff:
    base_md5, new_md5 = _data_md5(base.data_dvc), _data_md5(new.data_dvc)
    files: dict[str, list[str]] = {}
    note = None
    if base_commit is not None and base_md5 != new_md5:
        files, note = _dvc_diff(base_commit)
    return DataDiff(
        base_md5,
        new_md5,
        files,
        note,
        (base.metrics or {}).get("samples"),
        new.metrics.get("samples") if new.metrics else None,
    )


@dataclass(frozen=True)
class Reproducibility:
    status: str  # "identical", "within tolerance", "stale" or "unrecorded"
    detail: str


def _lock_inputs(lock: dict | None) -> dict[str, object]:
    """Each stage's dependency hashes and params: what the recorded results were computed from."""
    stages = (lock or {}).get("stages") or {}
    # Another stage's output (the model, for evaluate) is a result, not an input.
    produced = {out.get("path") for entry in stages.values() for out in entry.get("outs") or []}
    inputs: dict[str, object] = {}
    for stage, entry in stages.items():
        for dep in entry.get("deps") or []:
            if dep.get("path") not in produced:
                inputs[f"{stage}: {dep.get('path')}"] = dep.get("md5") or dep.get("hash")
        for file, values in (entry.get("params") or {}).items():
            for key, value in flatten(values).items():
                inputs[f"{stage}: {file}:{key}"] = value
    return inputs


def _same(old: float | None, fresh: float | None, tolerance: float) -> bool:
    if old is None or fresh is None:
        return old is fresh
    if math.isnan(old) or math.isnan(fresh):
        return math.isnan(old) and math.isnan(fresh)
    return abs(old - fresh) <= tolerance


def reproducibility(committed: Snapshot, reproduced: Snapshot, tolerance: float) -> Reproducibility:
    """Do the recorded results (`evaluate/`, `dvc.lock`) match the reproduced ones: identically, within
    ``tolerance``, or not (stale)? Latency is left out: it measures the machine."""
    if committed.metrics is None or committed.lock is None:
        return Reproducibility(
            "unrecorded",
            f"no committed {METRICS_FILE} and {LOCK_FILE} to check against: "
            "run `dvc repro` and commit both so reviewers see the numbers the code gives",
        )
    problems = []
    was, now = _lock_inputs(committed.lock), _lock_inputs(reproduced.lock)
    inputs = sorted(key for key in was.keys() | now.keys() if was.get(key) != now.get(key))
    if inputs:
        problems.append(f"{LOCK_FILE} was made from other inputs ({_listed(inputs)})")
    before, after = numeric_leaves(committed.metrics), numeric_leaves(reproduced.metrics)
    keys = sorted(key for key in before.keys() | after.keys() if not METRICS.get(key).machine_dependent)
    differing = [
        f"{key} {_number(before.get(key))} → {_number(after.get(key))}"
        for key in keys
        if not _same(before.get(key), after.get(key), tolerance)
    ]
    if differing:
        problems.append(f"{METRICS_FILE} differs beyond {tolerance:g} ({_listed(differing)})")
    if problems:
        return Reproducibility("stale", "; ".join(problems) + ": commit the reproduced dvc.lock and evaluate/")
    moved = [key for key in keys if not _same(before.get(key), after.get(key), 0.0)]
    predictions_moved = committed.predictions is not None and committed.predictions != reproduced.predictions
    if not moved and not predictions_moved:
        return Reproducibility(
            "identical",
            f"the same metrics as the committed {METRICS_FILE}"
            + (f" and the same {PREDICTIONS_FILE}" if committed.predictions is not None else "")
            + f", from the inputs {LOCK_FILE} records",
        )
    what = f"{_listed(moved)} moved" if moved else f"{PREDICTIONS_FILE} differs"
    return Reproducibility(
        "within tolerance",
        f"not bit-identical ({what}) but within {tolerance:g} of the committed {METRICS_FILE}, "
        f"from the inputs {LOCK_FILE} records",
    )


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:LISTED_DIFFERENCES])
    more = len(items) - LISTED_DIFFERENCES
    return f"{shown} and {more} more" if more > 0 else shown


def _number(value: float | None) -> str:
    return "absent" if value is None else f"{value:.4g}"


def tracking_link() -> tuple[str, str | None] | None:
    """The MLflow run of the workspace model: (run id, URL when a tracking server is configured)."""
    run = _json(RUN_FILE.read_text()) if RUN_FILE.is_file() else None
    if not run or "run_id" not in run:
        return None
    parts = urlsplit(str(run.get("tracking_uri", "")))
    if parts.scheme not in {"http", "https"}:
        return run["run_id"], None
    # Never print credentials that may sit in the URI.
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    server = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return run["run_id"], f"{server}/#/experiments/{run.get('experiment_id', '0')}/runs/{run['run_id']}"
