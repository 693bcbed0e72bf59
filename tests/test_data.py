"""Data behaviour: validation errors, cleaning, and leak-free deterministic splits."""

from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO_ROOT, tiny_params
from mlops.config import DataParams
from mlops.ml.data import DataError, describe, load_dataset, load_splits, split_dataset
from needs import need

RAW = REPO_ROOT / "data" / "rotten_tomatoes_corpus_full.csv.bz2"


def data_params(path: Path, **changes: object) -> DataParams:
    return DataParams.model_validate({**tiny_params()["data"], "path": str(path), "max_rows": None, **changes})


def write_csv(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "reviews.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def reviews(movies: int = 20, per_movie: int = 6) -> list[dict]:
    return [
        {"category": "fresh" if index % 2 else "rotten", "text": f"review {movie}-{index}", "movie_name": f"m{movie}"}
        for movie in range(movies)
        for index in range(per_movie)
    ]


@pytest.fixture(scope="module")
def real_data() -> pd.DataFrame:
    need("data")
    return load_dataset(data_params(RAW))


def test_the_real_data_is_cleaned(real_data: pd.DataFrame) -> None:
    assert list(real_data.columns) == ["text", "label", "group"]
    assert set(real_data["label"]) == {"fresh", "rotten"}
    assert not real_data["text"].duplicated().any()
    assert (real_data["text"].str.strip() != "").all()
    assert len(real_data) > 12000


def test_splits_share_no_movie_and_keep_the_label_balance(real_data: pd.DataFrame) -> None:
    params = data_params(RAW)
    splits = split_dataset(real_data, params, seed=42)
    groups = [set(split["group"]) for _, split in splits.items()]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert sum(len(split) for _, split in splits.items()) == len(real_data)
    overall = (real_data["label"] == "fresh").mean()
    for _, split in splits.items():
        assert abs((split["label"] == "fresh").mean() - overall) < 0.03
    assert abs(len(splits.test) / len(real_data) - params.test_size) < 0.02


def test_splits_are_deterministic(real_data: pd.DataFrame) -> None:
    params = data_params(RAW)
    first, second = split_dataset(real_data, params, 42), split_dataset(real_data, params, 42)
    for (_, a), (_, b) in zip(first.items(), second.items(), strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert not split_dataset(real_data, params, 7).test.equals(first.test)


def test_describe_counts_rows_and_labels(tmp_path: Path) -> None:
    splits = load_splits(data_params(write_csv(tmp_path, reviews())), seed=1)
    counts = describe(splits, ["rotten", "fresh"])
    assert sum(split["rows"] for split in counts.values()) == 120
    assert all(split["rows"] == split["rotten"] + split["fresh"] for split in counts.values())


def test_ignored_labels_empty_texts_and_duplicates_are_dropped(tmp_path: Path) -> None:
    rows = [
        *reviews(2, 2),
        {"category": "plot", "text": "a synopsis", "movie_name": "m0"},
        {"category": "fresh", "text": "   ", "movie_name": "m0"},
        {"category": "fresh", "text": "review 0-1", "movie_name": "m9"},
    ]
    frame = load_dataset(data_params(write_csv(tmp_path, rows), ignore_labels=["plot"]))
    assert len(frame) == 4


def test_rows_without_a_group_become_their_own_group(tmp_path: Path) -> None:
    rows = [{"category": "fresh", "text": "a", "movie_name": ""}, {"category": "rotten", "text": "b", "movie_name": ""}]
    frame = load_dataset(data_params(write_csv(tmp_path, rows)))
    assert frame["group"].nunique() == 2


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"category": "fresh", "review": "x", "movie_name": "m"}], "has no column 'text'"),
        ([{"category": "meh", "text": "x", "movie_name": "m"}], "unknown label(s) 'meh'"),
        ([{"category": "plot", "text": "x", "movie_name": "m"}], "has no usable rows"),
        ([{"category": "fresh", "text": "x", "movie_name": "m"}], "has no rows labelled 'rotten'"),
    ],
)
def test_bad_data_gets_one_clear_line(tmp_path: Path, rows: list[dict], expected: str) -> None:
    with pytest.raises(DataError) as error:
        load_dataset(data_params(write_csv(tmp_path, rows), ignore_labels=["plot"]))
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


def test_too_few_groups_for_the_splits(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs at least 5 groups"):
        load_splits(data_params(write_csv(tmp_path, reviews(movies=3))), seed=1)
