"""The README's claims table names tests that exist, so a renamed or deleted test cannot leave a claim unbacked."""

from __future__ import annotations

import re

from conftest import REPO_ROOT

NAMED = re.compile(r"`(test_\w+\.py)::(test_\w+)`")


def test_every_test_the_readme_names_exists() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    tests = readme[readme.index("## Tests") :]
    named = NAMED.findall(tests)
    assert len(named) >= 40, "the README's claims table names too few tests: was it rewritten?"
    missing = [
        f"{file}::{name}"
        for file, name in named
        if not (REPO_ROOT / "tests" / file).is_file()
        or not re.search(rf"^(async )?def {name}\(", (REPO_ROOT / "tests" / file).read_text(), re.MULTILINE)
    ]
    assert missing == []
