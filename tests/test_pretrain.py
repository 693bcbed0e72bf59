"""The pretrain stage: masked-language-model pretraining on unlabelled text that never holds a held-out row,
cached by DVC so that fine-tuning starts from it and a change to training reruns only training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from transformers import AutoModelForMaskedLM, AutoTokenizer

from conftest import copy_repository, git, run, tiny_params, write_params
from mlops.config import DataParams
from mlops.ml.data import load_splits, pretraining_texts

LABELS = ["cats", "dogs", "birds"]
PRETRAINED = {"model": {"pretrained": "pretrained"}}


def own_data(tmp_path: Path, **changes: object) -> DataParams:
    """Posts of 40 threads, each thread about one label, and an unlabelled "notes" row per thread and one of none."""
    rows = [
        {"topic": LABELS[thread % 3], "body": f"post {thread}-{index}", "thread": f"t{thread}"}
        for thread in range(40)
        for index in range(4)
    ]
    rows += [{"topic": "notes", "body": f"notes on thread {thread}", "thread": f"t{thread}"} for thread in range(40)]
    rows += [{"topic": "notes", "body": "notes on nothing", "thread": ""}]
    path = tmp_path / "posts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    own = {"text_column": "body", "label_column": "topic", "group_column": "thread", "labels": LABELS}
    return DataParams.model_validate(
        {**tiny_params()["data"], **own, "ignore_labels": ["notes"], "path": str(path), **changes}
    )


def test_pretraining_reads_the_training_rows_and_unlabelled_ones_never_a_held_out_row_or_group(tmp_path: Path) -> None:
    params = own_data(tmp_path, max_rows=None)
    splits = load_splits(params)
    texts = pretraining_texts(params, splits)
    assert not set(texts) & (set(splits.validation["text"]) | set(splits.test["text"]))
    held_out_threads = set(splits.validation["group"]) | set(splits.test["group"])
    assert {f"notes on {thread.replace('t', 'thread ')}" for thread in held_out_threads}.isdisjoint(texts)
    training_notes = {f"notes on {thread.replace('t', 'thread ')}" for thread in set(splits.train["group"])}
    assert set(texts) == set(splits.train["text"]) | training_notes | {"notes on nothing"}


def test_a_subsample_takes_the_unlabelled_rows_in_the_same_proportion(tmp_path: Path) -> None:
    params = own_data(tmp_path, max_rows=80)  # half the 160 labelled rows
    splits = load_splits(params)
    notes = [text for text in pretraining_texts(params, splits) if text.startswith("notes")]
    assert 0 < len(notes) <= 21


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"mask_probability": 0}, "pretrain.mask_probability: Input should be greater than 0, got 0"),
        ({"mask_probability": 1.0}, "pretrain.mask_probability: Input should be less than 1, got 1.0"),
        ({"epochs": 0}, "pretrain.epochs: Input should be greater than 0, got 0"),
        ({"learning_rate": "fast"}, "pretrain.learning_rate: Input should be a valid number, got 'fast'"),
        ({"mask_rate": 0.15}, "pretrain.mask_rate: unknown key"),
    ],
)
def test_bad_pretrain_params_stop_the_stage_in_one_line(tmp_path: Path, change: dict, expected: str) -> None:
    write_params(tmp_path, tiny_params(pretrain=change))
    result = run(["mlops", "pretrain"], tmp_path, check=False)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: params.yaml: {expected}")
    assert not (tmp_path / "pretrained").exists()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the repository whose tiny pipeline fine-tunes the encoder its pretrain stage saved."""
    project = copy_repository(tmp_path_factory.mktemp("pretrain") / "project")
    write_params(project, tiny_params(**PRETRAINED))
    run(["dvc", "pull", "-q", "data.dvc"], project)
    run(["dvc", "repro", "-q"], project)
    return project


@pytest.mark.slow
@pytest.mark.heavy
def test_train_fine_tunes_the_encoder_and_tokenizer_the_pretrain_stage_saved(project: Path) -> None:
    pretrained, fine_tuned = project / "pretrained", project / "models" / "model"
    assert AutoModelForMaskedLM.from_pretrained(pretrained).config.hidden_size == 32
    assert (
        AutoTokenizer.from_pretrained(fine_tuned).get_vocab() == AutoTokenizer.from_pretrained(pretrained).get_vocab()
    )
    history = json.loads((pretrained / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1]
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert "pretrained" in {dep["path"] for dep in lock["train"]["deps"]}


@pytest.mark.slow
@pytest.mark.heavy
def test_a_batch_bigger_than_the_pretraining_texts_is_one_line_and_keeps_the_last_encoder(
    project: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(project, tmp_path / "project", symlinks=True))
    before = (copy / "pretrained" / "model.safetensors").read_bytes()
    write_params(copy, tiny_params(**PRETRAINED, pretrain={"batch_size": 4000}))
    result = run(["mlops", "pretrain"], copy, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: pretrain.batch_size 4000 is more than the")
    assert (copy / "pretrained" / "model.safetensors").read_bytes() == before


@pytest.mark.slow
@pytest.mark.heavy
def test_a_fresh_clone_pulls_the_encoder_and_a_training_change_reruns_only_fine_tuning(
    project: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(project, tmp_path / "origin", symlinks=True))
    run(["dvc", "push", "-q", "pretrain"], copy)
    git(copy, "add", "-A")
    git(copy, "commit", "-q", "-m", "pretrained encoder in the in-repo remote")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(copy), str(clone)], tmp_path)
    run(["dvc", "pull", "-q", "data.dvc", "pretrain"], clone)
    status = json.loads(run(["dvc", "status", "--json", "pretrain"], clone).stdout)
    assert status == {}, "the pulled encoder is the one dvc.lock records"

    write_params(clone, tiny_params(**PRETRAINED, train={"epochs": 1}))
    output = run(["dvc", "repro"], clone).stdout
    assert "Stage 'pretrain' didn't change, skipping" in output
    assert "Running stage 'train'" in output and "Running stage 'evaluate'" in output
