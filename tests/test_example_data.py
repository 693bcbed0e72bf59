"""The example's own data: the Rotten Tomatoes snippets (data/rotten_tomatoes_corpus_full.csv.bz2).

Forkers: these tests know the example dataset (its labels, size and movie groups). Once params.yaml points at
your data they skip, saying so; delete this module or rewrite it for your data.
"""

import pandas as pd
import pytest

from conftest import REPO_ROOT
from mlops.config import load_params
from mlops.ml.data import load_dataset, pretraining_texts, split_dataset
from needs import need, not_applicable

EXAMPLE_PATH = "data/rotten_tomatoes_corpus_full.csv.bz2"
PARAMS = load_params(REPO_ROOT / "params.yaml")


@pytest.fixture(scope="module")
def real_data() -> pd.DataFrame:
    if PARAMS.data.path.as_posix() != EXAMPLE_PATH:
        not_applicable(
            f"params.yaml data.path is {PARAMS.data.path}, not the example's {EXAMPLE_PATH}: "
            "these are the example's data tests (delete or rewrite tests/test_example_data.py)"
        )
    need("data")
    return load_dataset(PARAMS.data.model_copy(update={"path": REPO_ROOT / EXAMPLE_PATH, "max_rows": None}))


def test_the_real_data_is_cleaned(real_data: pd.DataFrame) -> None:
    assert list(real_data.columns) == ["text", "label", "group"]
    assert set(real_data["label"]) == {"fresh", "rotten"}
    assert not real_data["text"].duplicated().any()
    assert (real_data["text"].str.strip() != "").all()
    assert len(real_data) > 12000


def test_splits_share_no_movie_and_keep_the_label_balance(real_data: pd.DataFrame) -> None:
    splits = split_dataset(real_data, PARAMS.data)
    groups = [set(split["group"]) for _, split in splits.items()]
    assert not groups[0] & groups[1] and not groups[0] & groups[2] and not groups[1] & groups[2]
    assert sum(len(split) for _, split in splits.items()) == len(real_data)
    overall = (real_data["label"] == "fresh").mean()
    for _, split in splits.items():
        assert abs((split["label"] == "fresh").mean() - overall) < 0.03
    assert abs(len(splits.test) / len(real_data) - PARAMS.data.test_size) < 0.02


def test_splits_are_deterministic(real_data: pd.DataFrame) -> None:
    first, second = split_dataset(real_data, PARAMS.data), split_dataset(real_data, PARAMS.data)
    for (_, a), (_, b) in zip(first.items(), second.items(), strict=True):
        pd.testing.assert_frame_equal(a, b)
    other_seed = PARAMS.data.model_copy(update={"split_seed": 7})
    assert not split_dataset(real_data, other_seed).test.equals(first.test)


def test_pretraining_reads_no_review_nor_synopsis_of_a_held_out_movie(real_data: pd.DataFrame) -> None:
    data = PARAMS.data.model_copy(update={"path": REPO_ROOT / EXAMPLE_PATH, "max_rows": None})
    splits = split_dataset(real_data, data)
    texts = set(pretraining_texts(data, splits))
    assert not texts & (set(splits.validation["text"]) | set(splits.test["text"]))
    raw = pd.read_csv(REPO_ROOT / EXAMPLE_PATH, dtype=str, keep_default_na=False)
    synopses = raw[raw["category"] == "plot"]
    held_out = set(splits.validation["group"]) | set(splits.test["group"])
    assert synopses["movie_name"].isin(held_out).any(), "some synopses are of held-out movies"
    assert not set(synopses.loc[synopses["movie_name"].isin(held_out), "text"].str.strip()) & texts
    assert len(texts) > len(splits.train) + 0.8 * len(synopses)
