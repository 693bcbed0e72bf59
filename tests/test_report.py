"""`mlops report` on hand-made metrics and plots in throwaway git repositories (no training)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from markdown_it import MarkdownIt

from conftest import git, tiny_params, write_params
from mlops import predictions, stats
from mlops.config import Params
from mlops.ml.spec import METRICS
from mlops.report import diff, write_report

LABELS = ["rotten", "fresh"]


def make_metrics(**overrides: object) -> dict:
    metrics = {
        "accuracy": 0.80,
        "macro_f1": 0.78,
        "roc_auc": 0.86,
        "log_loss": 0.45,
        "accuracy_over_majority": 0.25,
        "per_class": {label: {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 50} for label in LABELS},
        "model_size_mb": 10.0,
        "latency_p50_ms": 3.0,
        "latency_p95_ms": 5.0,
        "baseline": {"accuracy": 0.75, "macro_f1": 0.74, "roc_auc": 0.82, "log_loss": 0.5},
        "samples": {split: {"rows": 100, "rotten": 45, "fresh": 55} for split in ("train", "validation", "test")},
    }
    metrics.update(overrides)
    return metrics


def write_results(project: Path, metrics: dict, epochs: int = 3, shift: float = 0.0) -> None:
    """evaluate/metrics.json and the four plot files, as `mlops evaluate` writes them."""
    plots = project / "evaluate" / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    (project / "evaluate" / "metrics.json").write_text(json.dumps(metrics, indent=2))
    pairs = (
        [("rotten", "rotten")] * 40 + [("rotten", "fresh")] * 10 + [("fresh", "fresh")] * 45 + [("fresh", "rotten")] * 5
    )
    (plots / "confusion.csv").write_text("actual,predicted\n" + "".join(f"{a},{p}\n" for a, p in pairs))
    points = [i / 10 for i in range(11)]
    (plots / "roc.csv").write_text("fpr,tpr\n" + "".join(f"{x},{min(1.0, x**0.5 + shift)}\n" for x in points))
    (plots / "precision_recall.csv").write_text(
        "recall,precision\n" + "".join(f"{x},{max(0.5, 1 - x / 2 - shift)}\n" for x in points)
    )
    (plots / "training.csv").write_text(
        "epoch,train_loss,validation_loss,validation_accuracy\n"
        + "".join(f"{e},{0.7 - 0.05 * e},{0.72 - 0.04 * e - shift},{0.6 + 0.05 * e}\n" for e in range(1, epochs + 1))
    )


def write_lock(project: Path, epochs: int) -> None:
    lock = {
        "schema": "2.0",
        "stages": {
            "train": {
                "cmd": "mlops train",
                "deps": [{"path": "data", "hash": "md5", "md5": "abc.dir"}],
                "params": {"params.yaml": {"train": {"epochs": epochs}}},
                "outs": [{"path": "models", "hash": "md5", "md5": f"model{epochs}.dir"}],
            },
            "evaluate": {
                "cmd": "mlops evaluate",
                "deps": [{"path": "models", "hash": "md5", "md5": f"model{epochs}.dir"}],
                "outs": [{"path": "evaluate/metrics.json", "hash": "md5", "md5": "x"}],
            },
        },
    }
    (project / "dvc.lock").write_text(yaml.safe_dump(lock))


def set_data_md5(project: Path, md5: str) -> None:
    (project / "data.dvc").write_text(yaml.safe_dump({"outs": [{"md5": md5, "size": 1, "nfiles": 1, "path": "data"}]}))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository on main with one committed pipeline result (3 epochs), as the working directory."""
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, tiny_params(train={"epochs": 3}))
    set_data_md5(tmp_path, "999.dir")
    write_results(tmp_path, make_metrics())
    write_lock(tmp_path, epochs=3)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "base results")
    return tmp_path


def params() -> Params:
    return Params.model_validate(yaml.safe_load(Path("params.yaml").read_text()))


def commit_all(project: Path) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "change")


def report_text(base: str | None = None) -> str:
    written = write_report(params(), base, Path("report/report.md"))
    assert_valid_markdown(written.report)
    return written.report.read_text()


def metric_row(text: str, name: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
    return [cell.strip() for cell in line.strip("|").split(" | ")]


# The markdown checks, shared with tests/test_workflows.py.

UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


def _check_mermaid(block: str) -> None:
    lines = [line.strip() for line in block.strip().splitlines()]
    directives = [line for line in lines if line.startswith("%%{")]
    for directive in directives:
        assert directive.endswith("}%%"), directive
        json.loads(directive[len("%%{init:") : -len("}%%")].strip())
    body = [line for line in lines if not line.startswith("%%")]
    assert body[0] == "xychart-beta", body[0]
    kinds = {line.split(" ", 1)[0] for line in body[1:]}
    assert kinds <= {"title", "x-axis", "y-axis", "line", "bar"}, kinds
    x_axis = next(line for line in body if line.startswith("x-axis"))
    categories = re.fullmatch(r'x-axis "[^"]*" \[(.+)\]', x_axis)
    assert categories, x_axis
    count = len(categories.group(1).split(","))
    y_axis = re.fullmatch(r'y-axis "[^"]*" (\S+) --> (\S+)', next(line for line in body if line.startswith("y-axis")))
    assert y_axis, body
    low, high = float(y_axis.group(1)), float(y_axis.group(2))
    assert low < high
    series = [line for line in body if line.startswith("line")]
    assert series, "a chart without lines"
    for line in series:
        values = [float(value) for value in re.fullmatch(r"line \[(.+)\]", line).group(1).split(",")]
        assert 0 < len(values) <= count and all(math.isfinite(value) and low <= value <= high for value in values), line


def assert_valid_markdown(path: Path) -> None:
    """Tables have matching columns, every referenced image exists, Mermaid charts are well-formed."""
    text = path.read_text()
    lines = text.splitlines()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables = [token for token in tokens if token.type == "table_open"]
    assert len(tables) == text.count("\n| ---") + text.startswith("| ---"), "a table did not parse as a table"
    for table in tables:
        rows = lines[table.map[0] : table.map[1]]
        widths = {len(UNESCAPED_PIPE.split(row.strip())) for row in rows}
        assert len(widths) == 1, f"table rows with different column counts: {rows}"
    mermaid = [token for token in tokens if token.type == "fence" and token.info == "mermaid"]
    assert len(mermaid) == text.count("```mermaid")
    for block in mermaid:
        _check_mermaid(block.content)
    images = [child for token in tokens if token.children for child in token.children if child.type == "image"]
    for image in images:
        assert (path.parent / image.attrs["src"]).is_file(), f"missing image {image.attrs['src']}"
    assert text.count("<details>") == text.count("</details>")


# The tests


def test_first_pull_request_without_a_base_says_so(project: Path) -> None:
    text = report_text()  # a single commit: no previous one to compare with
    assert "No base to compare with" in text
    assert "(the base has no `data.dvc` to compare with)" in text
    assert metric_row(text, "accuracy")[1:4] == ["—", "0.8000", ""]
    assert "| no regression |" not in text  # no base metrics, no regression checks
    assert "✅ would be promoted" in text
    assert len(list(Path("report").glob("report-*.png"))) == 4


def test_base_without_metrics_is_reported_not_fatal(project: Path) -> None:
    git(project, "rm", "-q", "-r", "evaluate", "dvc.lock")
    git(project, "commit", "-q", "-m", "a base that never ran the pipeline")
    git(project, "checkout", "-q", "-b", "feature")
    write_results(project, make_metrics())
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "results")
    text = report_text(base="main")
    assert "has no committed `evaluate/metrics.json`" in text
    assert "Confusion matrix on the test split (new;" in text


def test_metrics_with_other_keys_are_compared_where_they_overlap(project: Path) -> None:
    git(project, "checkout", "-q", "-b", "feature")
    renamed = make_metrics(f1_weighted=0.7)
    del renamed["roc_auc"]
    write_results(project, renamed)
    commit_all(project)
    text = report_text()
    assert metric_row(text, "f1_weighted")[1] == "—" and metric_row(text, "f1_weighted")[5] == "new metric"
    assert metric_row(text, "roc_auc")[2] == "—" and "only in base" in metric_row(text, "roc_auc")[5]
    assert "The base's metrics have other keys: only in base: `roc_auc`; new: `f1_weighted`." in text


def test_plots_in_another_format_count_as_absent(project: Path) -> None:
    Path("evaluate/plots/training.csv").write_text("step,loss\n1,0.5\n")
    git(project, "commit", "-q", "-am", "a base with another history format")
    git(project, "checkout", "-q", "-b", "feature")
    write_results(project, make_metrics())
    commit_all(project)
    text = report_text()
    assert "Loss per epoch (blue: new;" in text
    assert text.count("    line [") == 2 + 2 + 2  # training: new only (2 lines); ROC and PR: base and new


def test_without_predictions_headline_regressions_are_judged_by_value_and_the_rest_has_no_verdict(
    project: Path,
) -> None:
    git(project, "checkout", "-q", "-b", "feature")
    worse = make_metrics(accuracy=0.75, macro_f1=0.775, log_loss=0.5, latency_p95_ms=9.0)
    worse["baseline"] = {**worse["baseline"], "accuracy": 0.6}
    worse["per_class"]["fresh"]["recall"] = 0.6
    write_results(project, worse)
    commit_all(project)
    text = report_text()
    assert metric_row(text, "accuracy")[3:] == ["🔴 ▼ -0.0500", "", "⚠️ regression (no interval)"]
    assert metric_row(text, "macro_f1")[5] == ""  # 0.005 worse: within report.regression_tolerance (0.01)
    assert metric_row(text, "log_loss")[3:] == ["🔴 ▲ +0.0500", "", "⚠️ regression (no interval)"]  # lower is better
    assert metric_row(text, "latency_p95_ms")[5] == "depends on the machine"  # never flagged
    assert metric_row(text, "baseline.accuracy")[5] == ""  # the baseline is not the candidate
    assert metric_row(text, "per_class.fresh.recall")[5] == ""  # not a headline metric: no verdict
    assert "**Significant regressions beyond 0.01:** `accuracy`, `log_loss`" in text
    assert "by value alone, no intervals: the workspace has no `evaluate/predictions.csv`" in text


def test_improvements_are_green_and_the_gate_preview_uses_the_base(project: Path) -> None:
    git(project, "checkout", "-q", "-b", "feature")
    changed = tiny_params(train={"epochs": 3})
    changed["gate"]["max_regression"] = {"accuracy": 0.01}
    write_params(project, changed)
    write_results(project, make_metrics(accuracy=0.85, latency_p95_ms=4.0), epochs=4, shift=0.02)
    commit_all(project)
    text = report_text()
    assert metric_row(text, "accuracy")[3] == "🟢 ▲ +0.0500"
    assert metric_row(text, "latency_p95_ms")[3] == "🟢 ▼ -1.0000"
    assert "| `accuracy` | no regression | 0.7900 | 0.8500 |  | ✅ pass |" in text
    assert "| `gate.max_regression.macro_f1` | `0.5` | (absent) |" in text
    assert 'x-axis "epoch" [1, 2, 3, 4]' in text  # base (3 epochs) and new (4) overlaid


def test_nan_metrics_show_as_nan_and_fail_the_gate(project: Path) -> None:
    git(project, "checkout", "-q", "-b", "feature")
    write_results(project, make_metrics(roc_auc=math.nan, accuracy=math.nan))
    commit_all(project)
    text = report_text()
    assert metric_row(text, "roc_auc")[2:] == ["NaN", "n/a", "", "⚠️ NaN"]
    assert "| `accuracy` | minimum | 0.0000 | NaN |  | ❌ fail |" in text
    assert "❌ would not be promoted" in text


def test_params_and_data_changes_are_listed(project: Path) -> None:
    git(project, "checkout", "-q", "-b", "feature")
    write_params(project, tiny_params(train={"epochs": 4}, data={"max_rows": 900}))
    set_data_md5(project, "123.dir")
    write_results(project, make_metrics(samples={"test": {"rows": 150, "rotten": 50, "fresh": 100}}))
    commit_all(project)
    text = report_text()
    assert "| `data.max_rows` | `600` | `900` |" in text
    assert "| `train.epochs` | `3` | `4` |" in text
    assert "Data changed: `data.dvc` md5 `999.dir` → `123.dir`." in text
    assert "| test | 100 → 150 | 45 (45%) → 50 (33%) | 55 (55%) → 100 (67%) |" in text


def test_default_base_is_the_merge_base_or_the_previous_commit_on_main(project: Path) -> None:
    first = git(project, "rev-parse", "HEAD")
    git(project, "checkout", "-q", "-b", "feature")
    git(project, "commit", "-q", "--allow-empty", "-m", "work")
    assert diff.resolve_base(None).commit == first
    assert diff.resolve_base(None).how == "the merge base with `main`"
    git(project, "checkout", "-q", "main")
    git(project, "commit", "-q", "--allow-empty", "-m", "merged")
    assert diff.resolve_base(None).commit == first
    assert diff.resolve_base(None).how == "the previous commit"


def test_reproducibility_identical_within_tolerance_stale_and_unrecorded(project: Path) -> None:
    committed = diff.at_revision("HEAD")
    assert diff.reproducibility(committed, diff.in_workspace(), 0.02).status == "identical"

    write_results(project, make_metrics(latency_p95_ms=50.0))  # latency measures the machine: ignored
    assert diff.reproducibility(committed, diff.in_workspace(), 0.02).status == "identical"

    write_results(project, make_metrics(accuracy=0.81))
    within = diff.reproducibility(committed, diff.in_workspace(), 0.02)
    assert within.status == "within tolerance" and "accuracy" in within.detail

    write_results(project, make_metrics(accuracy=0.7))
    write_lock(project, epochs=4)
    stale = diff.reproducibility(committed, diff.in_workspace(), 0.02)
    assert stale.status == "stale"
    assert "train: params.yaml:train.epochs" in stale.detail and "accuracy 0.8 → 0.7" in stale.detail
    assert "evaluate: models" not in stale.detail  # the model is a result of train, not an input

    nothing = diff.Snapshot(None, None, None, None)
    assert diff.reproducibility(nothing, diff.in_workspace(), 0.02).status == "unrecorded"


def test_mlflow_link_only_for_a_server_and_without_credentials(project: Path) -> None:
    run = {"run_id": "abc", "experiment_id": "3", "tracking_uri": "sqlite:///mlflow.db"}
    Path("models").mkdir()
    Path("models/run.json").write_text(json.dumps(run))
    assert diff.tracking_link() == ("abc", None)
    Path("models/run.json").write_text(
        json.dumps({**run, "tracking_uri": "https://me:secret@mlflow.example.com:8443/"})
    )
    assert diff.tracking_link() == ("abc", "https://mlflow.example.com:8443/#/experiments/3/runs/abc")
    assert "[`abc`](https://mlflow.example.com:8443/#/experiments/3/runs/abc)" in report_text()


def test_unknown_base_revision_is_one_clear_line_and_writes_nothing(project: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mlops"), "report", "--base", "no-such-branch"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: base revision 'no-such-branch' does not exist in this repository: fetch it "
        "(`git fetch origin no-such-branch`, or actions/checkout with fetch-depth: 0) or pass another --base"
    ]
    assert not Path("report").exists()


def test_missing_workspace_metrics_is_a_clear_error(project: Path) -> None:
    Path("evaluate/metrics.json").unlink()
    with pytest.raises(diff.ReportError, match=r"evaluate/metrics.json is missing .*run `dvc repro`"):
        write_report(params(), None, Path("report/report.md"))
    assert not Path("report/report.md").exists()


# Per-row predictions: the report's intervals, on synthetic models whose quality is known.

ROWS = 600
SCORED_MARGINS = {"accuracy": 0.02, "log_loss": 0.03}


def write_model(project: Path, skill: float, noise: int, labels: list[str] = LABELS, rows: int = ROWS) -> dict:
    """evaluate/predictions.csv of a model whose true-class logit is raised by ``skill``, and its metrics."""
    rng = np.random.default_rng(1000)  # the same rows and labels every time
    texts = [f"test text {index}" for index in range(rows)]
    y_true = rng.integers(0, len(labels), rows)
    logits = np.random.default_rng(noise).normal(size=(rows, len(labels)))
    logits[np.arange(rows), y_true] += skill
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scored = {"": probabilities, predictions.BASELINE_PREFIX: probabilities}
    table = predictions.table(predictions.row_keys(texts), labels, y_true, scored)
    (project / "evaluate").mkdir(exist_ok=True)
    (project / "evaluate" / "predictions.csv").write_text(predictions.to_csv(table))
    model = predictions.read((project / "evaluate" / "predictions.csv").read_text()).model
    return {name: round(stats.point(METRICS.get(name).scorer, model), 4) for name in METRICS.headline}


@pytest.fixture
def scored_project(project: Path) -> Path:
    """The project with main's results from a model of known skill, predictions included, and a real gate margin."""
    write_params(project, tiny_params(train={"epochs": 3}, gate={"max_regression": SCORED_MARGINS}))
    write_results(project, make_metrics(**write_model(project, skill=2.0, noise=1)))
    commit_all(project)
    git(project, "checkout", "-q", "-b", "feature")
    return project


def test_an_unchanged_tree_is_reproduced_identical_and_flags_nothing(scored_project: Path) -> None:
    Path("README.md").write_text("a change that does not touch the model\n")
    commit_all(scored_project)
    text = report_text()
    assert "**Reproducibility:** ✅ reproduced: identical" in text
    assert "**Significant regressions beyond 0.01:** none" in text
    assert f"paired bootstrap over the same {ROWS} test rows" in text
    for name in METRICS.headline:
        assert metric_row(text, name)[3:] == ["0", "+0.0000 to +0.0000", "unchanged"]
    assert "✅ would be promoted" in text


def test_a_clearly_worse_model_is_a_significant_regression_and_the_gate_preview_refuses_it(
    scored_project: Path,
) -> None:
    write_results(scored_project, make_metrics(**write_model(scored_project, skill=0.3, noise=2)))
    commit_all(scored_project)
    text = report_text()
    for name in METRICS.headline:
        assert metric_row(text, name)[5] == "⚠️ significant regression", name
    assert "**Significant regressions beyond 0.01:** `accuracy`, `macro_f1`, `roc_auc`, `log_loss`" in text
    assert re.search(r"\| `accuracy` \| no significant regression \| .* \| ❌ fail \|", text)
    assert re.search(r"\| `log_loss` \| no significant regression \| .* \| ❌ fail \|", text)
    assert "❌ would not be promoted" in text
    assert "a significant difference in accuracy at the 5% level" in text


def test_a_model_of_the_same_skill_with_another_seed_is_within_noise_and_passes(scored_project: Path) -> None:
    write_results(scored_project, make_metrics(**write_model(scored_project, skill=2.0, noise=3)))
    commit_all(scored_project)
    text = report_text()
    for name in METRICS.headline:
        assert metric_row(text, name)[5] == "within noise", name
    assert "**Significant regressions beyond 0.01:** none" in text
    assert re.search(r"\| `accuracy` \| no significant regression \| .* \| ✅ pass \|", text)
    assert "✅ would be promoted" in text


def test_other_test_rows_give_unpaired_intervals_and_say_why(scored_project: Path) -> None:
    write_results(scored_project, make_metrics(**write_model(scored_project, skill=2.0, noise=3, rows=ROWS + 50)))
    commit_all(scored_project)
    text = report_text()
    assert f"unpaired bootstrap: the test rows differ (the base has {ROWS} test rows and the workspace 650)" in text
    assert metric_row(text, "accuracy")[4].endswith("(unpaired)")
    assert "McNemar" not in text


@pytest.mark.parametrize(
    ("predictions_text", "note"),
    [
        (None, "the base has no `evaluate/predictions.csv`"),
        ("row,label\n", "the base's `evaluate/predictions.csv` cannot be used (columns missing: predicted)"),
    ],
)
def test_unusable_base_predictions_fall_back_to_values_with_the_reason(
    project: Path, predictions_text: str | None, note: str
) -> None:
    if predictions_text is not None:
        Path("evaluate/predictions.csv").write_text(predictions_text)
        commit_all(project)
    git(project, "checkout", "-q", "-b", "feature")
    write_results(project, make_metrics(**write_model(project, skill=2.0, noise=1)))
    commit_all(project)
    text = report_text()
    assert f"**Headline changes:** by value alone, no intervals: {note}" in text
    assert metric_row(text, "accuracy")[4] == ""


def test_a_change_of_labels_is_said_first_and_nothing_is_judged_against_the_old_task(scored_project: Path) -> None:
    three = ["negative", "neutral", "positive"]
    write_params(
        scored_project,
        tiny_params(train={"epochs": 3}, data={"labels": three}, gate={"max_regression": SCORED_MARGINS}),
    )
    metrics = make_metrics(**write_model(scored_project, skill=0.1, noise=4, labels=three))
    metrics["per_class"] = {label: {"precision": 0.3, "recall": 0.3, "f1": 0.3, "support": 200} for label in three}
    write_results(scored_project, metrics)
    commit_all(scored_project)
    text = report_text()
    banner = next(line for line in text.splitlines() if line.startswith("> ⚠️ **Another task"))
    assert '`data.labels` ["rotten", "fresh"] → ["negative", "neutral", "positive"]' in banner
    assert "**Significant regressions beyond 0.01:** none" in text
    assert not any(line.startswith("| `per_class.rotten.") for line in text.splitlines())
    assert metric_row(text, "per_class.neutral.f1")[1] == "—"
    assert "No regression checks: the base is another task or test set" in text
    assert "no regression |" not in text
    assert "The base's plots are not comparable" in text
    assert "grey: base" not in text


def ci_results(folder: Path, project: Path, commit: str, metrics: dict) -> None:
    """What the workflow downloads: main's pipeline results as CI reproduced them."""
    shutil.copytree(project / "evaluate", folder / "evaluate")
    shutil.copy(project / "dvc.lock", folder / "dvc.lock")
    (folder / "evaluate" / "metrics.json").write_text(json.dumps(metrics))
    run_url = "https://github.com/o/r/actions/runs/7"
    (folder / "source.json").write_text(json.dumps({"commit": commit, "run_url": run_url, "run_id": 7}))


def test_base_results_from_ci_replace_the_committed_ones_and_are_checked_against_them(
    scored_project: Path, tmp_path: Path
) -> None:
    main = git(scored_project, "rev-parse", "main")
    committed = json.loads(Path("evaluate/metrics.json").read_text())
    ci_results(tmp_path / "ci", scored_project, main, {**committed, "accuracy": committed["accuracy"] - 0.005})
    Path("README.md").write_text("docs\n")
    commit_all(scored_project)
    written = write_report(params(), None, Path("report/report.md"), tmp_path / "ci")
    text = written.report.read_text()
    assert f"against the base `{main[:8]}` (CI's results for main at `{main[:8]}`)" in text
    assert (
        f"**Base results:** reproduced by CI on main at `{main[:8]}` ([run](https://github.com/o/r/actions/runs/7))"
        in text
    )
    assert "**Main's committed results against CI's:** ✅ reproduced within tolerance" in text
    assert metric_row(text, "accuracy")[1] == f"{committed['accuracy'] - 0.005:.4f}"


@pytest.mark.parametrize(
    ("make_folder", "why"),
    [
        (lambda folder: None, "does not exist"),
        (lambda folder: folder.mkdir(), "is empty"),
        (lambda folder: (folder.mkdir(), (folder / "x").write_text("")), "source.json` is missing or has no commit"),
    ],
)
def test_missing_empty_or_broken_base_results_fall_back_to_the_committed_files(
    scored_project: Path, tmp_path: Path, make_folder: object, why: str
) -> None:
    make_folder(tmp_path / "ci")
    Path("README.md").write_text("docs\n")
    commit_all(scored_project)
    text = write_report(params(), None, Path("report/report.md"), tmp_path / "ci").report.read_text()
    note = next(line for line in text.splitlines() if line.startswith("- **Note:** CI's results for main are not"))
    assert why in note and note.endswith("compared with the committed files instead.")
    assert "**Reproducibility:** ✅ reproduced: identical" in text


def test_the_report_command_takes_base_results(scored_project: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mlops"), "report", "--base-results", str(tmp_path / "absent")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "CI's results for main are not available" in Path("report/report.md").read_text()
