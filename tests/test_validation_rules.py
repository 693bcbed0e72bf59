"""params.yaml validation rules and their one-line messages (config.py), at and around every cross-field limit.

Unit tests only, so `make mutation` can run them for every mutant of the validation in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from conftest import tiny_params
from mlops.config import ConfigError, DataParams, ModelParams, Params, _describe, load_params


def data(**changes: object) -> dict:
    return {**tiny_params()["data"], **changes}


def model(**changes: object) -> dict:
    return {**tiny_params()["model"], **changes}


def refused(path: Path, content: object) -> str:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    with pytest.raises(ConfigError) as error:
        load_params(path)
    return str(error.value)


def test_test_and_validation_splits_must_leave_more_than_ten_percent_for_training() -> None:
    assert DataParams.model_validate(data(test_size=0.5, validation_size=0.375))
    with pytest.raises(ValidationError, match="test_size \\+ validation_size must leave at least 10% for training"):
        DataParams.model_validate(data(test_size=0.5, validation_size=0.4))  # exactly 0.9 in floating point


def test_labels_must_be_distinct() -> None:
    with pytest.raises(ValidationError, match="labels must be distinct"):
        DataParams.model_validate(data(labels=["fresh", "rotten", "fresh"]))


def test_hidden_size_must_be_a_multiple_of_the_heads() -> None:
    assert ModelParams.model_validate(model(hidden_size=48, num_heads=3)).num_heads == 3
    with pytest.raises(ValidationError, match="hidden_size must be a multiple of num_heads"):
        ModelParams.model_validate(model(hidden_size=48, num_heads=5))


def test_a_value_error_is_the_rule_itself_on_one_line(tmp_path: Path) -> None:
    message = refused(tmp_path / "params.yaml", tiny_params(model={"hidden_size": 33}))
    assert message == f"{tmp_path / 'params.yaml'}: model: hidden_size must be a multiple of num_heads"


def test_a_bad_value_is_quoted_back(tmp_path: Path) -> None:
    message = refused(tmp_path / "params.yaml", tiny_params(train={"epochs": -1}))
    assert message == f"{tmp_path / 'params.yaml'}: train.epochs: Input should be greater than 0, got -1"


def test_a_missing_key_is_named_without_a_value(tmp_path: Path) -> None:
    params = tiny_params()
    del params["seed"]
    assert refused(tmp_path / "params.yaml", params) == (
        f"{tmp_path / 'params.yaml'}: seed: missing (copy it from params.yaml in the template)"
    )


def test_an_unknown_key_points_at_its_spelling(tmp_path: Path) -> None:
    message = refused(tmp_path / "params.yaml", tiny_params(serving={"chalenger_share": 0.5}))
    assert message == (
        f"{tmp_path / 'params.yaml'}: serving.chalenger_share: "
        "unknown key (check its spelling against params.yaml in the template)"
    )


def test_further_problems_are_counted_in_the_singular_and_plural(tmp_path: Path) -> None:
    two = refused(tmp_path / "params.yaml", tiny_params(train={"epochs": 0, "batch_size": 0}))
    assert two.endswith("train.epochs: Input should be greater than 0, got 0 (and 1 more problem)")
    three = refused(tmp_path / "params.yaml", tiny_params(train={"epochs": 0, "batch_size": 0, "learning_rate": 0}))
    assert three.endswith(" (and 2 more problems)")


def test_a_problem_with_the_whole_file_is_at_the_top_level() -> None:
    with pytest.raises(ValidationError) as error:
        Params.model_validate([])

    assert _describe(error.value, Path("p.yaml")).startswith("p.yaml: (top level): ")


def test_an_empty_file_says_to_copy_the_template(tmp_path: Path) -> None:
    message = refused(tmp_path / "params.yaml", "")
    assert message == f"{tmp_path / 'params.yaml'} is empty: copy params.yaml from the template and edit it"


def test_a_list_is_not_a_params_file(tmp_path: Path) -> None:
    assert (
        refused(tmp_path / "params.yaml", "- a\n")
        == f"{tmp_path / 'params.yaml'} must be a mapping of sections, got a list"
    )


def test_broken_yaml_names_its_line(tmp_path: Path) -> None:
    message = refused(tmp_path / "params.yaml", "seed: 1\ntrain: [1, 2\n")
    assert message == f"{tmp_path / 'params.yaml'} is not valid YAML at line 3: fix the syntax"


def test_a_missing_file_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_params(tmp_path / "nowhere.yaml")
    assert str(error.value) == f"{tmp_path / 'nowhere.yaml'} not found: run from the project root or pass --params"


def test_a_registered_model_name_may_use_capitals_digits_spaces_dots_and_dashes(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(tracking={"registered_model": "Reviews v2.1_final-B"})))
    assert load_params(path).tracking.registered_model == "Reviews v2.1_final-B"


def test_a_registered_model_name_mlflow_would_refuse_says_what_is_allowed(tmp_path: Path) -> None:
    message = refused(tmp_path / "params.yaml", tiny_params(tracking={"registered_model": "team/model"}))
    assert message == (
        f"{tmp_path / 'params.yaml'}: tracking.registered_model: 'team/model' is not a registered model name: use up "
        "to 256 letters, digits, spaces, '.', '_' or '-' (MLflow refuses '/' and ':'; quotes would break its search "
        "filters)"
    )


def test_a_duplicate_after_a_merge_key_is_still_refused(tmp_path: Path) -> None:
    text = yaml.safe_dump(tiny_params(), sort_keys=False).replace("train:\n", "train: &train\n", 1)
    text += "other: {<<: *train, epochs: 3, epochs: 4}\n"
    message = refused(tmp_path / "params.yaml", text)
    assert message.endswith(f"duplicate key 'epochs' at line {text.count(chr(10))}: keep one of them")


def test_a_duplicate_after_a_key_that_is_not_a_name_is_still_refused(tmp_path: Path) -> None:
    message = refused(tmp_path / "params.yaml", "seed: 1\n? [a, list]\n: 1\nseed: 2\n")
    assert message == f"{tmp_path / 'params.yaml'}: duplicate key 'seed' at line 4: keep one of them"


def test_a_path_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("seed: 1\n")
    with pytest.raises(ConfigError) as error:
        load_params(tmp_path / "file" / "params.yaml")
    assert str(error.value) == (
        f"{tmp_path / 'file' / 'params.yaml'} cannot be read (Not a directory): check its permissions"
    )


def test_a_character_yaml_refuses_outright_is_invalid_yaml_without_a_line(tmp_path: Path) -> None:
    """PyYAML's reader (control characters) gives no line, unlike its parser."""
    message = refused(tmp_path / "params.yaml", "seed: 1\x07\n")
    assert message == f"{tmp_path / 'params.yaml'} is not valid YAML: fix the syntax"


def test_a_yaml_date_is_read_as_its_text(tmp_path: Path) -> None:
    text = yaml.safe_dump(tiny_params(), sort_keys=False)
    experiment = next(line for line in text.splitlines() if line.strip().startswith("experiment:"))
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(experiment, "  experiment: 2026-11-29"))
    assert load_params(path).tracking.experiment == "2026-11-29"


def test_an_alias_inside_its_own_anchor_is_one_line(tmp_path: Path) -> None:
    message = refused(tmp_path / "params.yaml", "seed: &loop {again: *loop}\n")
    assert (
        message
        == f"{tmp_path / 'params.yaml'}: an alias (*name) is used inside its own anchor (&name): write the value out"
    )
