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
        ({"canary": {"window": "0m"}}, "canary.window: String should match pattern"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
        ({"threads": 100_000}, "threads: 100000 is more than the"),
        ({"threads": True}, "threads: Input should be a valid integer, got True"),
        ({"train": {"epochs": True}}, "train.epochs: Input should be a valid integer, got True"),
        ({"train": {"epochs": "3"}}, "train.epochs: Input should be a valid integer, got '3'"),
        ({"train": {"epochs": 10**8}}, "train.epochs: Input should be less than or equal to 1000"),
        ({"train": {"batch_size": 10**9}}, "train.batch_size: Input should be less than or equal to"),
        ({"train": {"progress_bar": 1}}, "train.progress_bar: Input should be a valid boolean, got 1"),
        ({"train": {"weight_decay": float("inf")}}, "train.weight_decay: Input should be a finite number, got inf"),
        ({"train": {"learning_rate": float("nan")}}, "train.learning_rate: Input should be a finite number"),
        ({"train": {"ngram_learning_rate": 0}}, "train.ngram_learning_rate: Input should be greater than 0"),
        ({"train": {"ngram_learning_rate": float("nan")}}, "train.ngram_learning_rate: Input should be a finite"),
        ({"train": {"ngram_learning_rate": "fast"}}, "train.ngram_learning_rate: Input should be a valid number"),
        ({"gate": {"minimum": {"accuracy": float("nan")}}}, "gate.minimum.accuracy: Input should be a finite number"),
        (
            {"gate": {"maximum": {"latency_p95_ms": float("inf")}}},
            "gate.maximum.latency_p95_ms: Input should be a finite",
        ),
        ({"model": {"vocab_size": 10**9}}, "model.vocab_size: Input should be less than or equal to 1000000"),
        ({"tracking": {"experiment": ""}}, "tracking.experiment: String should have at least 1 character"),
        ({"tracking": {"experiment": "   "}}, "tracking.experiment: must not be empty or blank"),
        ({"tracking": {"registered_model": ""}}, "tracking.registered_model: '' is not a registered model name"),
        ({"tracking": {"registered_model": "team/model"}}, "tracking.registered_model: 'team/model' is not a"),
        ({"tracking": {"registered_model": "it's"}}, 'tracking.registered_model: "it\'s" is not a'),
        ({"data": {"labels": ["rotten", ""]}}, "data.labels.1: String should have at least 1 character"),
        ({"data": {"path": 3}}, "data.path: Input should be a valid string, got 3"),
    ],
)
def test_a_bad_value_names_its_key(tmp_path: Path, change: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_params(write(tmp_path, tiny_params(**change)))
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(("section", "key"), [("train", "learning_rate"), ("train", None), ("canary", None)])
def test_a_missing_key_or_section_is_named(tmp_path: Path, section: str, key: str | None) -> None:
    params = tiny_params()
    if key:
        del params[section][key]
    else:
        del params[section]
    missing = f"{section}.{key}" if key else section
    with pytest.raises(ConfigError, match=rf"params.yaml: {missing}: missing \(copy it from params.yaml"):
        load_params(write(tmp_path, params))


def test_exponent_floats_are_numbers_as_in_yaml_1_2(tmp_path: Path) -> None:
    text = yaml.safe_dump(tiny_params(train={"learning_rate": 0.0015}), sort_keys=False)
    assert "  learning_rate: 0.0015\n" in text
    text = text.replace("  learning_rate: 0.0015\n", "  learning_rate: 1e-3\n")
    assert load_params(write(tmp_path, text)).train.learning_rate == 0.001


def test_yaml_merge_keys_may_be_overridden_without_counting_as_duplicates(tmp_path: Path) -> None:
    text = yaml.safe_dump(tiny_params(), sort_keys=False).replace("train:\n", "train: &train\n", 1)
    text += "other: {<<: *train, epochs: 3}\n"
    with pytest.raises(ConfigError, match=r"other: unknown key"):
        load_params(write(tmp_path, text))


def test_paths_and_values_keep_their_types(tmp_path: Path) -> None:
    params = load_params(write(tmp_path, tiny_params()))
    assert params.data.path == Path("data/rotten_tomatoes_corpus_full.csv.bz2")
    assert params.data.max_rows == 600 and params.train.progress_bar is False


SHIPPED = (REPO_ROOT / "params.yaml").read_text()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("train: [1, 2\n", "params.yaml is not valid YAML at line"),
        ("- a list\n", "params.yaml must be a mapping of sections, got a list"),
        ("just words\n", "params.yaml must be a mapping of sections, got a str"),
        ("", "params.yaml is empty: copy params.yaml from the template"),
        ("# only a comment\n\n", "params.yaml is empty"),
        (SHIPPED + "seed: 7\n", f"params.yaml: duplicate key 'seed' at line {SHIPPED.count(chr(10)) + 1}: keep one"),
        (SHIPPED.replace("  epochs: 4\n", "  epochs: 4\n  epochs: 5\n"), "duplicate key 'epochs' at line"),
        ("seed: 1\nseed: 1\n", "duplicate key 'seed' at line 2"),
    ],
)
def test_unreadable_files_are_refused(tmp_path: Path, content: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_params(write(tmp_path, content))
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_bytes_that_are_not_utf8_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_bytes(SHIPPED.encode().replace(b"threads: 1", b"threads: 1  # caf\xe9"))
    line = SHIPPED.splitlines().index(next(row for row in SHIPPED.splitlines() if row.startswith("threads:"))) + 1
    with pytest.raises(ConfigError, match=rf"params.yaml line {line} has a byte that is not UTF-8 \(0xe9\)"):
        load_params(path)


def test_a_missing_file_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found: run from the project root"):
        load_params(tmp_path / "params.yaml")


def test_a_folder_is_not_a_params_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder: pass the parameters file with --params"):
        load_params(tmp_path)


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(Params.model_validate(tiny_params()))
    assert flat["train.epochs"] == 2
    assert flat["gate.minimum.accuracy"] == 0.0
    assert flat["data.path"] == tiny_params()["data"]["path"]
