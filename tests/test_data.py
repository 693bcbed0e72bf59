"""Data behaviour on data made here: validation errors, cleaning, and leak-free deterministic splits.

These tests bring their own columns, labels and rows, so they hold whatever dataset params.yaml points at;
the tests of the example's own data file are in tests/test_example_data.py.
"""

from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_params
from mlops.config import DataParams
from mlops.ml.data import DataError, describe, load_dataset, load_splits, split_dataset

LABELS = ["cats", "dogs", "birds"]
OWN_DATA = {
    "text_column": "body",
    "label_column": "topic",
    "group_column": "thread",
    "labels": LABELS,
    "ignore_labels": ["spam"],
    "test_size": 0.2,
    "validation_size": 0.1,
    "split_seed": 1,
    "max_rows": None,
}


def data_params(path: Path, **changes: object) -> DataParams:
    return DataParams.model_validate({**tiny_params()["data"], **OWN_DATA, "path": str(path), **changes})


def write_csv(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "posts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def posts(threads: int = 30, per_thread: int = 4) -> list[dict]:
    """Rows of ``threads`` threads, each thread about one label, the labels in turn."""
    return [
        {"topic": LABELS[thread % len(LABELS)], "body": f"post {thread}-{index}", "thread": f"t{thread}"}
        for thread in range(threads)
        for index in range(per_thread)
    ]


def test_describe_counts_rows_and_labels(tmp_path: Path) -> None:
    splits = load_splits(data_params(write_csv(tmp_path, posts())))
    counts = describe(splits, LABELS)
    assert sum(split["rows"] for split in counts.values()) == 120
    assert all(split["rows"] == sum(split[label] for label in LABELS) for split in counts.values())


def test_ignored_labels_empty_texts_and_duplicates_are_dropped(tmp_path: Path) -> None:
    rows = [
        *posts(3, 2),
        {"topic": "spam", "body": "buy now", "thread": "t0"},
        {"topic": "cats", "body": "   ", "thread": "t0"},
        {"topic": "cats", "body": "post 0-1", "thread": "t9"},
    ]
    frame = load_dataset(data_params(write_csv(tmp_path, rows)))
    assert list(frame.columns) == ["text", "label", "group"]
    assert len(frame) == 6


def test_rows_without_a_group_become_their_own_group(tmp_path: Path) -> None:
    rows = [{"topic": label, "body": label, "thread": ""} for label in LABELS]
    frame = load_dataset(data_params(write_csv(tmp_path, rows)))
    assert frame["group"].nunique() == 3


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"topic": "cats", "text": "x", "thread": "t"}], "has no column 'body'"),
        ([{"topic": "fish", "body": "x", "thread": "t"}], "unknown label(s) 'fish'"),
        ([{"topic": "spam", "body": "x", "thread": "t"}], "has no usable rows"),
        ([{"topic": "cats", "body": "x", "thread": "t"}], "has no rows labelled 'dogs', 'birds'"),
    ],
)
def test_bad_data_gets_one_clear_line(tmp_path: Path, rows: list[dict], expected: str) -> None:
    with pytest.raises(DataError) as error:
        load_dataset(data_params(write_csv(tmp_path, rows)))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_file_says_dvc_pull(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run `dvc pull`"):
        load_dataset(data_params(tmp_path / "absent.csv"))


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.csv.bz2"
    path.write_bytes(b"not bzip2 at all")
    with pytest.raises(DataError, match="is not a readable CSV file"):
        load_dataset(data_params(path))


def test_splits_share_no_group_cover_every_row_and_hold_every_label(tmp_path: Path) -> None:
    params = data_params(write_csv(tmp_path, posts(threads=60)))
    frame = load_dataset(params)
    splits = split_dataset(frame, params)
    groups = [set(split["group"]) for _, split in splits.items()]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert sum(len(split) for _, split in splits.items()) == len(frame)
    assert all(set(split["label"]) == set(LABELS) for _, split in splits.items())


def test_splits_are_deterministic_and_change_with_the_split_seed(tmp_path: Path) -> None:
    params = data_params(write_csv(tmp_path, posts(threads=60)))
    frame = load_dataset(params)
    first, second = split_dataset(frame, params), split_dataset(frame, params)
    for (_, a), (_, b) in zip(first.items(), second.items(), strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert not split_dataset(frame, params.model_copy(update={"split_seed": 7})).test.equals(first.test)


def test_without_a_group_column_the_split_is_by_row_and_stratified(tmp_path: Path) -> None:
    rows = [{"topic": LABELS[index % 3], "body": f"post {index}", "thread": "one thread"} for index in range(150)]
    params = data_params(write_csv(tmp_path, rows), group_column=None)
    splits = load_splits(params)
    assert [len(split) for _, split in splits.items()] == [105, 15, 30]
    for _, split in splits.items():
        assert split["label"].value_counts().to_dict() == {label: len(split) // 3 for label in LABELS}


def test_without_a_group_column_the_column_may_be_absent(tmp_path: Path) -> None:
    rows = [{"topic": LABELS[index % 3], "body": f"post {index}"} for index in range(60)]
    assert len(load_splits(data_params(write_csv(tmp_path, rows), group_column=None)).test) == 12


def test_too_few_groups_names_the_group_column_the_sizes_the_counts_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_splits(data_params(write_csv(tmp_path, posts(threads=3))))
    message = str(error.value)
    assert "the test split (data.test_size 0.2, data.validation_size 0.1) needs at least 5 groups" in message
    assert "data.group_column 'thread'" in message and "(per label: birds 1, cats 1, dogs 1)" in message
    assert "set data.group_column: null to split by row" in message and "\n" not in message


def test_a_label_with_too_few_groups_for_every_split_is_named_with_the_counts(tmp_path: Path) -> None:
    rows = [*posts(threads=30), *({"topic": "birds", "body": f"rare {n}", "thread": "rare"} for n in range(2))]
    rows = [row for row in rows if row["topic"] != "birds" or row["thread"] in {"rare", "t2"}]
    with pytest.raises(DataError) as error:
        load_splits(data_params(write_csv(tmp_path, rows)))
    message = str(error.value)
    assert "has no rows labelled 'birds'" in message
    assert "birds 2, cats 10, dogs 10" in message and "data.group_column 'thread'" in message
