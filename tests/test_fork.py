"""A fork, end to end: another task swapped in by editing only the forker's files, and the machinery follows.

The second dataset is real and multi-class: the ChatterBot corpus (the chatterbot-corpus package, BSD licence),
whose short chat lines in Dutch, Italian and Spanish become a three-label language classifier, grouped by
conversation. The test does what the README's "Make it yours" asks of a forker (data, params.yaml, ml/card.md),
then runs the pipeline, the report against the binary main, deploy and the model server, and checks that no
file of the machinery had to change.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from transformers import AutoModelForSequenceClassification

from conftest import copy_repository, git, merge, run, tiny_params, write_params
from needs import need

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

LABELS = ["dutch", "italian", "spanish"]
REGISTERED_MODEL = "chat-language"
# What a forker changes: their data, params.yaml, the card's prose; the rest are pipeline outputs.
FORKER_FILES = {"params.yaml", "data.dvc", "src/mlops/ml/card.md"}
PIPELINE_OUTPUTS = {"dvc.lock"}
CARD = """**Intended use**: tell which language ({labels}) a short chat line is written in; one text per row in the
column `text`, a `label` and its `score` out.

**Limitations**: trained on the ChatterBot corpus's short conversational lines only; a text in any other language
still gets one of these labels; texts are truncated to {max_length} tokens. Scores are not calibrated probabilities.
"""
FORK = {
    "data": {
        "path": "data/chat_lines.csv",
        "text_column": "line",
        "label_column": "language",
        "group_column": "conversation",
        "labels": LABELS,
        "ignore_labels": [],
        "max_rows": 480,
    },
    "model": {"vocab_size": 600},
    # Small data needs more passes than the default: a model that learned nothing fails evaluate and the gate.
    "train": {"epochs": 10, "batch_size": 16, "learning_rate": 0.003},
    "evaluate": {"fail_without_skill": True},
    "tracking": {"experiment": "chat-language", "registered_model": REGISTERED_MODEL},
    "gate": {
        "minimum": {"accuracy": 0.5, "macro_f1": 0.4, "accuracy_over_majority": 0.01},
        "maximum": {"model_size_mb": 50.0, "latency_p95_ms": 1000.0},
        "max_regression": {"accuracy": 0.02, "macro_f1": 0.02},
    },
}


def chat_lines() -> pd.DataFrame:
    """Every line of the package's Dutch, Italian and Spanish conversations, with its language and conversation."""
    need("chatterbot-corpus")
    import chatterbot_corpus

    root = Path(chatterbot_corpus.__file__).parent / "data"
    rows = []
    for language in LABELS:
        for topic in sorted((root / language).glob("*.yml")):
            conversations = yaml.safe_load(topic.read_text(encoding="utf-8")).get("conversations") or []
            for number, conversation in enumerate(conversations):
                rows += [
                    {"line": str(line), "language": language, "conversation": f"{language}/{topic.stem}/{number}"}
                    for line in conversation
                ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fork(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The template copied, forked on a branch by changing only the forker's files, and `dvc repro` run.

    Every command runs the fork's own code (PYTHONPATH at its src/), as it would in the forker's clone.
    """
    project = copy_repository(tmp_path_factory.mktemp("fork") / "project")
    env = {"PYTHONPATH": str(project / "src")}
    git(project, "checkout", "-q", "-b", "fork")
    (project / "data").mkdir()
    chat_lines().to_csv(project / FORK["data"]["path"], index=False)
    run(["dvc", "add", "-q", "data"], project, env=env)
    git(project, "add", "data.dvc")
    git(project, "commit", "-q", "-m", "fork: the new data")  # as the checklist says: data.dvc first
    write_params(project, merge(tiny_params(), FORK))
    (project / "src" / "mlops" / "ml" / "card.md").write_text(CARD)
    run(["dvc", "repro", "-q"], project, env=env)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "fork: chat-line language")
    return project, env


def test_the_fork_changes_only_the_forkers_files_and_the_pipeline_outputs(fork: tuple[Path, dict]) -> None:
    project, _ = fork
    changed = set(git(project, "diff", "--name-only", "main", "fork").splitlines())
    outputs = {name for name in changed if name.startswith("evaluate/")}
    assert changed - outputs == FORKER_FILES | PIPELINE_OUTPUTS


def test_evaluate_scores_every_label_and_draws_a_curve_for_each(fork: tuple[Path, dict]) -> None:
    project, _ = fork
    metrics = json.loads((project / "evaluate" / "metrics.json").read_text())
    assert list(metrics["per_class"]) == LABELS
    assert metrics["accuracy_over_majority"] > 0.01
    assert metrics["roc_auc"] == pytest.approx(
        sum(metrics["per_class"][label]["roc_auc"] for label in LABELS) / 3, abs=1e-3
    )
    for name in ("roc", "precision_recall"):
        assert list(pd.read_csv(project / "evaluate" / "plots" / f"{name}.csv")["class"].unique()) == LABELS


def test_dvc_plots_show_colours_the_curves_by_class(fork: tuple[Path, dict]) -> None:
    project, env = fork
    shown = json.loads(run(["dvc", "plots", "show", "--json"], project, env=env).stdout)["data"]
    roc = shown["evaluate/plots/roc.csv"][0]["content"]
    assert roc["encoding"]["color"]["field"] == "class"
    assert {row["class"] for row in roc["data"]["values"]} == set(LABELS)


def test_the_report_against_the_binary_main_draws_the_new_labels(fork: tuple[Path, dict]) -> None:
    project, env = fork
    run(["mlops", "report", "--base", "main", "--out", "report/report.md"], project, env=env)
    text = (project / "report" / "report.md").read_text()
    for label in LABELS:
        assert f'title "ROC curve, {label} vs rest"' in text
        assert f'title "Precision-recall curve, {label} vs rest"' in text


@pytest.fixture(scope="module")
def deployed(fork: tuple[Path, dict]) -> str:
    """`mlops deploy` on the fork, into its own embedded tracking store; its output."""
    project, env = fork
    return run(["mlops", "deploy"], project, env=env).stdout


def test_deploy_registers_the_fork_with_its_own_card_and_names(fork: tuple[Path, dict], deployed: str) -> None:
    project, _ = fork
    assert f"version 1 of {REGISTERED_MODEL} registered and promoted to champion" in deployed
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    card = client.get_model_version(REGISTERED_MODEL, "1").description
    assert "dutch or italian or spanish" in card and "split by `conversation`" in card
    assert "ChatterBot corpus" in card


def test_the_server_answers_with_the_forks_labels(
    fork: tuple[Path, dict], deployed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, _ = fork
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    from mlops.config import load_params
    from mlops.serving.app import build_server, create_app, model_sources

    params = load_params(project / "params.yaml")
    server = build_server(params, model_sources(params, None, None))
    with TestClient(create_app(server)) as client:
        lines = ["Waarom studeren we geschiedenis?", "Sei disonesta", "¿Qué he dicho mal?"]
        answered = client.post("/predict", json={"texts": lines}).json()["predictions"]
    assert {prediction["label"] for prediction in answered} <= set(LABELS)
    model = mlflow.pyfunc.load_model(f"models:/{REGISTERED_MODEL}@champion")
    assert set(model.predict(pd.DataFrame({"text": lines}))["label"]) <= set(LABELS)


def test_the_example_data_tests_skip_saying_the_data_changed(fork: tuple[Path, dict]) -> None:
    project, env = fork
    result = run(["python", "-m", "pytest", "-q", "-rs", "tests/test_example_data.py"], project, env=env)
    assert "4 skipped" in result.stdout
    assert "params.yaml data.path is data/chat_lines.csv, not the example's" in result.stdout


def test_the_doctor_names_only_what_the_fork_left_of_the_example(fork: tuple[Path, dict]) -> None:
    project, env = fork
    result = run(["mlops", "doctor"], project, check=False, env=env)
    assert result.returncode == 1
    left = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("- ")]
    assert left == ["README.md", "tests/test_example_data.py"]


def test_evaluate_stops_on_a_model_that_answers_one_label_and_only_warns_when_told(
    pipeline_project: Path, tmp_path: Path
) -> None:
    """The first-run trap of small data: a collapsed model must not pass quietly with exit 0."""
    project = Path(shutil.copytree(pipeline_project, tmp_path / "project", symlinks=True))
    model_dir = project / "models" / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    with torch.no_grad():
        model.classifier.bias[0] = 100.0  # every text gets the first label
    model.save_pretrained(model_dir)
    params = tiny_params(evaluate={"fail_without_skill": True})
    write_params(project, params)

    result = run(["mlops", "evaluate"], project, check=False)
    assert result.returncode == 1
    first_label = params["data"]["labels"][0]
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"error: the model predicts {first_label!r} for all ")
    assert "set evaluate.fail_without_skill: false to only warn" in last_line
    metrics = json.loads((project / "evaluate" / "metrics.json").read_text())
    assert metrics["accuracy_over_majority"] <= 0

    write_params(project, tiny_params(evaluate={"fail_without_skill": False}))
    warned = run(["mlops", "evaluate"], project)
    assert f"the model predicts {first_label!r} for all" in warned.stderr
