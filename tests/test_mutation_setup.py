"""`make mutation` stays pointed at the decision code: a renamed function or test file cannot drop out of it."""

from __future__ import annotations

import importlib
import tomllib
from functools import reduce

from conftest import REPO_ROOT
from mutation_score import SCOPE, parse

MUTMUT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def test_every_scored_module_is_mutated_and_every_scored_function_exists() -> None:
    mutated = {path.removeprefix("src/").removesuffix(".py").replace("/", ".") for path in MUTMUT["only_mutate"]}
    assert mutated == set(SCOPE)
    for module, functions in SCOPE.items():
        loaded = importlib.import_module(module)
        for function in functions or ():
            found = reduce(getattr, function.split("."), loaded)
            assert callable(found) or isinstance(found, property), f"{module}.{function} is not a function"


def test_the_selected_unit_tests_exist() -> None:
    for path in MUTMUT["pytest_add_cli_args_test_selection"]:
        assert (REPO_ROOT / path).is_file(), path


def test_mutant_names_map_to_functions_and_methods() -> None:
    assert parse("mlops.serving.router.x_bucket__mutmut_11", 0).function == "bucket"
    assert parse("mlops.registry.gate.xǁCheckǁreason__mutmut_3", 1).function == "Check.reason"
    assert parse("mlops.registry.gate.xǁCheckǁreason__mutmut_3", 1).module == "mlops.registry.gate"
    assert parse("mlops.config.x__describe__mutmut_2", 1).function == "_describe"
    assert parse("mlops.config.x__describe__mutmut_2", 1).detected
    assert not parse("mlops.config.x__describe__mutmut_2", 0).detected
    assert not parse("mlops.config.x__describe__mutmut_2", 33).detected  # no test reaches it: not killed
