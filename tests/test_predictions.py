"""evaluate/predictions.csv: written by the evaluate stage, read and paired by the report and the gate."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import run
from mlops import predictions

LABELS = ["neg", "pos"]


def written(texts: list[str], y_true: list[int], probabilities: np.ndarray, labels: list[str] = LABELS) -> str:
    scored = {"": probabilities, predictions.BASELINE_PREFIX: probabilities[:, ::-1]}
    return predictions.to_csv(predictions.table(predictions.row_keys(texts), labels, np.array(y_true), scored))


def test_a_file_round_trips_with_unique_keys_for_repeated_texts() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.123456, 0.876544]])
    table = predictions.read(written(["a", "b", "a"], [0, 1, 1], probabilities))
    assert table.labels == LABELS
    assert len(set(table.keys)) == 3 and table.keys[2] == f"{table.keys[0]}-2"
    assert table.model.predicted.tolist() == [0, 1, 1] and table.baseline.predicted.tolist() == [1, 0, 0]
    assert table.model.probabilities[2, 0] == 0.1235  # 4 significant digits


def test_rows_in_another_order_are_paired_by_key() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    base = predictions.read(written(["a", "b", "c"], [0, 1, 1], probabilities))
    new = predictions.read(written(["c", "a", "b"], [1, 0, 1], probabilities[[2, 0, 1]]))
    pairing = predictions.pair(base, new)
    assert pairing.paired and pairing.note is None
    assert pairing.base.probabilities.tolist() == new.model.probabilities.tolist()


def test_other_rows_other_lengths_and_other_labels_are_told_apart() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8]])
    base = predictions.read(written(["a", "b"], [0, 1], probabilities))
    other_rows = predictions.pair(base, predictions.read(written(["a", "z"], [0, 1], probabilities)))
    assert not other_rows.paired and other_rows.note == "1 of the 2 test rows are not in the base's test rows"
    longer = predictions.read(written(["a", "b", "c"], [0, 1, 0], np.vstack([probabilities, [[0.5, 0.5]]])))
    other_length = predictions.pair(base, longer)
    assert not other_length.paired and other_length.note == "the base has 2 test rows and the workspace 3"
    relabelled = predictions.read(written(["a", "b"], [0, 1], probabilities, labels=["bad", "good"]))
    assert predictions.pair(base, relabelled) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a CSV file"),
        ("row,label\nx,neg\n", "columns missing: predicted"),
        ("row,label,predicted,p_neg,p_pos\nx,neg,neg,,0.5\n", "missing or NaN"),
        ("row,label,predicted,p_neg,p_pos\nx,maybe,neg,0.5,0.5\n", "`label` holds labels"),
        ("row,label,predicted,p_neg,p_pos\nx,neg,neg,0.5,0.5\nx,pos,neg,0.5,0.5\n", "not unique"),
    ],
)
def test_a_malformed_file_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(predictions.PredictionsError, match=message):
        predictions.read(text)


@pytest.mark.slow
def test_evaluate_writes_every_test_row_for_the_model_and_the_baseline(pipeline_project: Path) -> None:
    metrics_rows = pd.read_csv(pipeline_project / "evaluate" / "plots" / "confusion.csv")
    table = predictions.read((pipeline_project / "evaluate" / "predictions.csv").read_text())
    assert len(table.keys) == len(metrics_rows)
    assert table.baseline is not None
    assert (np.array(table.labels)[table.model.labels] == metrics_rows["actual"].to_numpy()).all()


@pytest.mark.slow
def test_nan_probabilities_stop_evaluate_with_one_line_and_write_nothing(
    pipeline_project: Path, tmp_path: Path
) -> None:
    project = Path(shutil.copytree(pipeline_project, tmp_path / "project", symlinks=True))
    weights_file = project / "models" / "model" / "model.safetensors"
    weights = load_file(weights_file)
    weights = {name: torch.full_like(tensor, float("nan")) for name, tensor in weights.items()}
    save_file(weights, weights_file, metadata={"format": "pt"})
    before = {path: path.read_bytes() for path in (project / "evaluate").rglob("*") if path.is_file()}
    result = run(["mlops", "evaluate"], project, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: the model gave NaN or infinite probabilities for ")
    assert {path: path.read_bytes() for path in (project / "evaluate").rglob("*") if path.is_file()} == before
