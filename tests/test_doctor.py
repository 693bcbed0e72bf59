"""`mlops doctor` names what still refers to the shipped example, and is silent once nothing does."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import merge, tiny_params, write_params
from mlops import doctor
from mlops.cli import app
from mlops.config import Params

example = pytest.importorskip(
    "mlops.ml.example", reason="src/mlops/ml/example.py was deleted: the doctor has nothing to compare with"
)


OWN = {
    "data": {
        "path": "data/own.csv",
        "label_column": "y",
        "group_column": None,
        "labels": ["a", "b"],
        "ignore_labels": [],
    },
    "tracking": {"experiment": "own", "registered_model": "own-model"},
    "train": {"epochs": 9},
    "gate": {"minimum": {"accuracy": 0.5, "macro_f1": 0.5}},
}


def nested(dotted: dict[str, object]) -> dict:
    """{"data.path": x} as {"data": {"path": x}}."""
    result: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return result


def lay_out(project: Path, like_the_example: bool, monkeypatch: pytest.MonkeyPatch) -> Params:
    """A project folder whose params, data.dvc, card, README and tests are the example's or its own."""
    monkeypatch.chdir(project)
    words = " ".join(example.WORDS) if like_the_example else "chat lines in three languages"
    card = project / "card.md"
    card.write_text(f"**Intended use**: {words}.")
    monkeypatch.setattr(doctor, "CARD_TEMPLATE", card)
    (project / "README.md").write_text(f"# A template\n\nIt classifies {words}.\n")
    md5 = example.DATA_MD5 if like_the_example else "0123456789abcdef0123456789abcdef.dir"
    (project / "data.dvc").write_text(yaml.safe_dump({"outs": [{"md5": md5, "path": "data"}]}))
    if like_the_example:
        for name in example.TEST_FILES:
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            (project / name).write_text("")
    params = merge(tiny_params(), nested(example.PARAMS) if like_the_example else OWN)
    write_params(project, params)
    return Params.model_validate(params)


def test_every_kind_of_example_leftover_is_named_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = doctor.findings(lay_out(tmp_path, True, monkeypatch))
    assert len(found) == len(example.PARAMS) + 4
    assert found[0] == f"params.yaml data.path is still the example's ({example.PARAMS['data.path']!r}): " + (
        "point it at your data (README: Make it yours)"
    )
    assert any(line.startswith("data.dvc still tracks the example data") for line in found)
    assert any(line.startswith("src/mlops/ml/card.md (the model card's prose) still describes") for line in found)
    assert any(line.startswith("README.md still describes the example") for line in found)
    assert f"{example.TEST_FILES[0]} tests the example's data: delete it, or rewrite it for yours" in found


def test_a_fork_that_is_its_own_has_nothing_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor.findings(lay_out(tmp_path, False, monkeypatch)) == []


def test_the_command_lists_the_leftovers_and_exits_1_until_none_remain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lay_out(tmp_path, True, monkeypatch)
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].endswith(
        "still refer to the example (src/mlops/ml/example.py says what it is)"
    )
    lay_out(tmp_path, False, monkeypatch)
    (tmp_path / example.TEST_FILES[0]).unlink()
    result = CliRunner().invoke(app, ["doctor"])
    assert (result.exit_code, result.output) == (0, "nothing refers to the example any more\n")
