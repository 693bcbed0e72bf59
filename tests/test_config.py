"""params.yaml validation: one readable line per mistake, before any work."""

from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT, tiny_params
from mlops.config import ConfigError, Params, flatten, load_params


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def test_the_shipped_params_are_valid() -> None:
    params = load_params(REPO_ROOT / "params.yaml")
    assert len(params.data.labels) >= 2
    assert params.threads == 1


def test_a_null_group_column_is_a_split_by_row(tmp_path: Path) -> None:
    assert load_params(write(tmp_path, tiny_params(data={"group_column": None}))).data.group_column is None


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train": {"epochs": 0}}, "train.epochs: Input should be greater than 0, got 0"),
        ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid integer"),
        ({"train": {"epocks": 3}}, "train.epocks: unknown key"),
        ({"model": {"dropout": 1.5}}, "model.dropout: Input should be less than or equal to 1"),
        ({"model": {"hidden_size": 130, "num_heads": 4}}, "model: hidden_size must be a multiple of num_heads"),
        ({"data": {"test_size": 0.5, "validation_size": 0.45}}, "data: test_size + validation_size must leave"),
        ({"data": {"labels": ["only one"]}}, "data.labels: List should have at least 2 items"),
        ({"canary": {"window": "ten minutes"}}, "canary.window: String should match pattern"),
    ],
)
def test_a_bad_value_names_its_key(tmp_path: Path, change: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_params(write(tmp_path, tiny_params(**change)))
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_a_missing_key_is_named(tmp_path: Path) -> None:
    params = tiny_params()
    del params["train"]["learning_rate"]
    with pytest.raises(ConfigError, match=r"train\.learning_rate: Field required"):
        load_params(write(tmp_path, params))


@pytest.mark.parametrize(
    ("content", "expected"),
    [("train: [1, 2\n", "is not valid YAML at line"), ("- a list\n", "must be a mapping of sections")],
)
def test_unreadable_files_are_refused(tmp_path: Path, content: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_params(write(tmp_path, content))


def test_a_missing_file_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: run from the project root"):
        load_params(tmp_path / "params.yaml")


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(Params.model_validate(tiny_params()))
    assert flat["train.epochs"] == 2
    assert flat["gate.minimum.accuracy"] == 0.0
    assert flat["data.path"] == tiny_params()["data"]["path"]
