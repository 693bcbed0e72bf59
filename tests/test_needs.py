"""The skip policy (tests/needs.py): in CI a missing tool or dataset fails, locally it skips with the fix."""

from __future__ import annotations

import re

import pytest

import needs
from conftest import REPO_ROOT


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        needs.NEEDS, "sometool", needs.Need("sometool (Debian package sometool)", "make system-deps", lambda: None)
    )
    monkeypatch.setitem(needs.NEEDS, "somegpu", needs.Need("a CUDA GPU", "", lambda: None))


def test_a_missing_tool_fails_under_ci_with_the_reason(
    nothing_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(
        pytest.fail.Exception, match=r"sometool \(Debian package sometool\) is missing: run `make system-deps`"
    ):
        needs.need("sometool")


def test_a_missing_tool_skips_locally_naming_the_install_command(
    nothing_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match=r"^sometool \(Debian package sometool\) is missing: run `make system-deps`$"
    ):
        needs.need("sometool")


def test_missing_hardware_skips_even_under_ci_naming_it(
    nothing_installed: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.skip.Exception, match=r"^needs a CUDA GPU, which this machine lacks$"):
        needs.need("somegpu")


def test_a_present_tool_is_returned_where_it_was_found() -> None:
    assert needs.need("data") == str(REPO_ROOT / "data" / "rotten_tomatoes_corpus_full.csv.bz2")


def test_data_missing_names_dvc_pull() -> None:
    assert needs.NEEDS["data"].install == "dvc pull data.dvc"


def test_no_test_skips_except_through_the_policy() -> None:
    """pytest.skip, skipif and importorskip belong in tests/needs.py only, so CI cannot skip silently."""
    skipping = re.compile(r"pytest\.(skip\(|importorskip|mark\.skip)")
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((REPO_ROOT / "tests").glob("*.py"))
        if path.name not in {"needs.py", "test_needs.py"}
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if skipping.search(line)
    ]
    assert offenders == []


def test_ci_run_marks_itself_as_ci() -> None:
    """.ci/run exports CI=true, so the policy fails on a missing tool there even outside GitHub."""
    assert re.search(r"^export CI=true$", (REPO_ROOT / ".ci" / "run").read_text(), re.MULTILINE)
