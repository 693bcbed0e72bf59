"""The canary split as pure functions (serving/router.py): exact shares, stable buckets, sticky users.

Unit tests only, so `make mutation` can run them for every mutant of the router in a fraction of a second.
"""

from __future__ import annotations

import itertools

import pytest

from mlops.serving.router import VARIANTS, bucket, route

KEYS = [f"user-{number}" for number in range(10_000)]


def test_a_bucket_is_the_same_fixed_point_on_every_replica_and_restart() -> None:
    """Pinned values: a change of hash, digest size or scaling would move users between variants on upgrade."""
    assert bucket("user-1") == 0.6041924073669338
    assert bucket("") == 0.8931675160897388


def test_buckets_spread_evenly_over_zero_to_one() -> None:
    points = [bucket(key) for key in KEYS]
    assert 0.0 <= min(points) < 0.001 and 0.999 < max(points) < 1.0
    deciles = [sum(lower / 10 <= point < (lower + 1) / 10 for point in points) for lower in range(10)]
    assert all(900 <= count <= 1100 for count in deciles), deciles


@pytest.mark.parametrize(("share", "routed"), [(0.1, 1014), (0.25, 2538), (0.5, 4952), (0.9, 9007)])
def test_the_challenger_gets_its_share_of_users_and_no_more(share: float, routed: int) -> None:
    """A share of 0.1 sends a tenth of users to the challenger, not nine tenths (exact counts for fixed keys)."""
    assert sum(route(key, share) == "challenger" for key in KEYS) == routed


def test_a_share_of_zero_or_one_sends_everyone_one_way() -> None:
    assert {route(key, 0.0) for key in KEYS} == {"champion"}
    assert {route(key, 1.0) for key in KEYS} == {"challenger"}


def test_the_challenger_answers_exactly_the_keys_whose_bucket_is_below_its_share() -> None:
    share = bucket("user-1")
    assert route("user-1", share) == "champion"  # at the boundary the share is exclusive
    assert route("user-1", share + 1e-12) == "challenger"


def test_raising_the_share_only_moves_champion_users_to_the_challenger() -> None:
    shares = [0.0, 0.05, 0.2, 0.5, 0.8, 1.0]
    for lower, higher in itertools.pairwise(shares):
        before = {key for key in KEYS if route(key, lower) == "challenger"}
        after = {key for key in KEYS if route(key, higher) == "challenger"}
        assert before < after or before == after == set(KEYS)


def test_the_variants_are_the_champion_and_the_challenger() -> None:
    assert VARIANTS == ("champion", "challenger")
