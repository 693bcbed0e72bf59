"""Promotion and rollback on MLflow aliases (registry/registry.py), on a real sqlite store, alias by alias.

Fast enough for `make mutation` to run for every mutant of the registry (servers.sqlite_registry copies a
ready store). test_registry.py runs the whole deploy against sqlite and a real `mlflow server`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops.registry import registry
from mlops.registry.registry import RegistryError
from servers import sqlite_registry

NAME = "reviews"


@pytest.fixture
def client(tmp_path: Path) -> MlflowClient:
    """A registry holding three versions of NAME and no aliases."""
    client = MlflowClient(sqlite_registry(tmp_path))
    client.create_registered_model(NAME)
    for _ in range(3):
        client.create_model_version(NAME, str(tmp_path / "model"), run_id=None)
    return client


def alias_map(client: MlflowClient) -> dict[str, str]:
    return registry.aliases(client, NAME)


def rolled_back(client: MlflowClient, version: str) -> str | None:
    return client.get_model_version(NAME, version).tags.get(registry.ROLLED_BACK_TAG)


def test_the_first_promotion_makes_a_champion_and_no_previous_one(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    assert alias_map(client) == {"champion": "1"}


def test_promoting_remembers_the_replaced_champion_and_drops_its_challenger_alias(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "2")
    registry.promote(client, NAME, "2", "test", "a test")
    assert alias_map(client) == {"champion": "2", "previous-champion": "1"}


def test_promoting_another_version_keeps_the_challenger(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "3")
    registry.promote(client, NAME, "2", "test", "a test")
    assert alias_map(client) == {"champion": "2", "previous-champion": "1", "challenger": "3"}


def test_promoting_the_champion_again_changes_nothing(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    registry.promote(client, NAME, "2", "test", "a test")
    registry.promote(client, NAME, 2, "test", "a test")  # a number works like its string
    assert alias_map(client) == {"champion": "2", "previous-champion": "1"}


def test_promoting_an_unknown_version_or_model_is_one_line_and_changes_nothing(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    with pytest.raises(RegistryError, match=r"^model 'reviews' has no version '9': `mlops models` lists its versions$"):
        registry.promote(client, NAME, "9", "test", "a test")
    with pytest.raises(RegistryError, match=r"has no model named 'nothing': run `mlops deploy` to register one"):
        registry.promote(client, "nothing", "1", "test", "a test")
    assert alias_map(client) == {"champion": "1"}


def test_rollback_restores_the_previous_champion_and_marks_the_demoted_version(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    registry.promote(client, NAME, "2", "test", "a test")
    assert registry.rollback(client, NAME, "test", "a test") == "1"
    assert alias_map(client) == {"champion": "1"}
    assert rolled_back(client, "2") == "true"
    assert rolled_back(client, "1") is None


def test_rollback_undoes_one_promotion_only(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    registry.promote(client, NAME, "2", "test", "a test")
    registry.rollback(client, NAME, "test", "a test")
    with pytest.raises(RegistryError, match=r"^model 'reviews' has no previous champion to roll back to: "):
        registry.rollback(client, NAME, "test", "a test")
    assert alias_map(client) == {"champion": "1"}


def test_rollback_without_a_champion_restores_the_previous_one_and_tags_nothing(client: MlflowClient) -> None:
    client.set_registered_model_alias(NAME, registry.PREVIOUS_CHAMPION, "1")
    assert registry.rollback(client, NAME, "test", "a test") == "1"
    assert alias_map(client) == {"champion": "1"}
    assert [rolled_back(client, version) for version in ("1", "2", "3")] == [None, None, None]


def test_rollback_onto_the_same_version_does_not_mark_it_rolled_back(client: MlflowClient) -> None:
    client.set_registered_model_alias(NAME, registry.CHAMPION, "1")
    client.set_registered_model_alias(NAME, registry.PREVIOUS_CHAMPION, "1")
    assert registry.rollback(client, NAME, "test", "a test") == "1"
    assert rolled_back(client, "1") is None


def test_retiring_the_challenger_removes_only_that_alias(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "2")
    registry.retire_challenger(client, NAME, "test", "a test")
    assert alias_map(client) == {"champion": "1"}
    registry.retire_challenger(client, NAME, "test", "a test")  # nothing to retire: no error
    assert alias_map(client) == {"champion": "1"}


def test_the_challenger_version_is_named_or_its_absence_explained(client: MlflowClient) -> None:
    with pytest.raises(RegistryError, match=r"^model 'reviews' has no challenger version: name the version"):
        registry.version_of(client, NAME, registry.CHALLENGER, "mlops promote 3")
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "3")
    assert registry.version_of(client, NAME, registry.CHALLENGER, "mlops promote 3") == "3"


def last_moves(client: MlflowClient, count: int) -> list[tuple[str, str | None, str | None, str, str]]:
    return [(move.alias, move.before, move.after, move.via, move.why) for move in registry.history(client, NAME)][
        -count:
    ]


def test_every_move_records_how_and_why_it_was_made(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "mlops promote", "first")
    registry.promote(client, NAME, "2", "mlops promote", "better")
    assert last_moves(client, 2) == [
        ("champion", "1", "2", "mlops promote", "better"),
        ("previous-champion", None, "1", "mlops promote", "better"),
    ]
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "3")
    registry.retire_challenger(client, NAME, "mlops canary watch", "worse on error rate")
    assert last_moves(client, 1) == [("challenger", "3", None, "mlops canary watch", "worse on error rate")]
    registry.rollback(client, NAME, "mlops rollback", "alert fired")
    assert last_moves(client, 2) == [
        ("champion", "2", "1", "mlops rollback", "alert fired"),
        ("previous-champion", "1", None, "mlops rollback", "alert fired"),
    ]


def test_a_retired_challenger_is_tagged_rolled_back(client: MlflowClient) -> None:
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "2")
    registry.retire_challenger(client, NAME, "test", "a test")
    assert rolled_back(client, "2") == "true"
    assert rolled_back(client, "1") is None


class Killed(BaseException):
    """The process dies: nothing after this point of the move runs."""


class KilledWhileMovingAliases(MlflowClient):
    """A real client whose process dies at the first alias it sets, after the pending move is written."""

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        raise Killed


def test_a_move_killed_halfway_is_finished_by_the_next_one_as_planned(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    with pytest.raises(Killed):
        registry.promote(KilledWhileMovingAliases(client.tracking_uri), NAME, "2", "mlops promote", "better")
    assert alias_map(client) == {"champion": "1"}

    assert registry.finish_interrupted(client, NAME)
    assert alias_map(client) == {"champion": "2", "previous-champion": "1"}
    assert last_moves(client, 2) == [
        ("champion", "1", "2", "mlops promote", "better (finished after an interrupted move)"),
        ("previous-champion", None, "1", "mlops promote", "better (finished after an interrupted move)"),
    ]
    assert registry.PENDING_TAG not in client.get_registered_model(NAME).tags


def test_a_canary_starts_as_the_challenger_and_the_move_is_recorded(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    registry.start_canary(client, NAME, 2, "mlops deploy", "passed the gate")  # a number works like its string
    assert alias_map(client) == {"champion": "1", "challenger": "2"}
    assert last_moves(client, 1) == [("challenger", None, "2", "mlops deploy", "passed the gate")]


def test_the_champion_cannot_be_its_own_canary(client: MlflowClient) -> None:
    registry.promote(client, NAME, "1", "test", "a test")
    with pytest.raises(RegistryError) as error:
        registry.start_canary(client, NAME, "1", "test", "a test")
    assert str(error.value) == "version 1 of 'reviews' is already the champion: it cannot be its own canary"
    with pytest.raises(RegistryError, match=r"^model 'reviews' has no version '9': `mlops models` lists its versions$"):
        registry.start_canary(client, NAME, "9", "test", "a test")
    assert alias_map(client) == {"champion": "1"}


def test_a_move_records_who_made_it_and_when(client: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    before = time.time()
    registry.promote(client, NAME, "1", "test", "a test")
    after = time.time()
    [moved] = registry.history(client, NAME)
    assert moved.by == "octocat (GitHub run 42)"
    assert before <= moved.at <= after


def test_an_unreadable_pending_move_is_one_line_saying_how_to_repair_it(client: MlflowClient) -> None:
    client.set_registered_model_tag(NAME, registry.PENDING_TAG, "{not json")
    with pytest.raises(RegistryError) as error:
        registry.promote(client, NAME, "1", "test", "a test")
    assert str(error.value) == (
        "model 'reviews' has an unreadable pending_move tag: check its aliases with `mlops models`, "
        "set them with `mlops promote`, then delete the tag in the MLflow UI"
    )
    assert alias_map(client) == {}
