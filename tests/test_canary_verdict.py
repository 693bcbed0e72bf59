"""The canary verdict as a pure function (serving/canary.py `decide`), at and around every threshold.

Unit tests only, so `make mutation` can run them for every mutant of the verdict in a fraction of a second.
test_canary.py runs the same verdict against a live Prometheus and registry.
"""

from __future__ import annotations

import math

import pytest

from mlops.config import CanaryParams
from mlops.serving.canary import Analysis, Check, Decision, VariantStats, decide

PARAMS = CanaryParams(
    window="10m",
    min_requests=200,
    max_error_rate_increase=0.01,
    max_latency_p99_ratio=1.5,
    max_accuracy_drop=0.02,
    min_feedback=50,
)
HEALTHY = VariantStats(requests=1000.0, errors=10.0, latency_p99_s=0.02, feedback=100.0, correct=90.0, versions=("1",))


def variant(**changes: object) -> VariantStats:
    return VariantStats(**{**HEALTHY.__dict__, **changes})


def verdict(challenger: VariantStats, champion: VariantStats = HEALTHY, params: CanaryParams = PARAMS) -> Analysis:
    return decide({"champion": champion, "challenger": challenger}, params)


def check(analysis: Analysis, name: str) -> Check:
    return next(found for found in analysis.checks if found.name == name)


def test_a_healthy_challenger_is_promoted_with_every_check_shown() -> None:
    analysis = verdict(variant(versions=("2",)))
    assert analysis.decision is Decision.PROMOTE
    assert analysis.reason == "the challenger is as good as the champion on every check"
    assert analysis.window == "10m"
    assert analysis.checks == [
        Check("requests", "1000", "1000", ">= 200 each", True),
        Check("error rate", "1.00%", "1.00%", "<= champion + 1.00%", True),
        Check("p99 latency", "20.0 ms", "20.0 ms", "<= champion x 1.5", True),
        Check("online accuracy", "90.00% of 100", "90.00% of 100", ">= champion - 2.00%, >= 50 labels each", True),
        Check("version", "1", "2", "one each", True),
    ]
    assert analysis.challenger_version == "2"


@pytest.mark.parametrize(("errors", "decision"), [(20.0, Decision.PROMOTE), (20.1, Decision.ROLL_BACK)])
def test_the_error_rate_may_rise_by_exactly_its_allowance(errors: float, decision: Decision) -> None:
    """Champion 1.0%: the challenger may fail 2.0% of requests (inclusive), not 2.01%."""
    analysis = verdict(variant(errors=errors))
    assert analysis.decision is decision
    assert check(analysis, "error rate").passed is (decision is Decision.PROMOTE)


@pytest.mark.parametrize(("latency", "decision"), [(0.03, Decision.PROMOTE), (0.0301, Decision.ROLL_BACK)])
def test_p99_latency_may_be_exactly_its_ratio_of_the_champions(latency: float, decision: Decision) -> None:
    assert verdict(variant(latency_p99_s=latency)).decision is decision


@pytest.mark.parametrize(("correct", "decision"), [(75.0, Decision.PROMOTE), (74.9, Decision.ROLL_BACK)])
def test_online_accuracy_may_drop_by_exactly_its_allowance(correct: float, decision: Decision) -> None:
    """Numbers exact in binary floating point (1.0 - 0.75 == 0.25), so the boundary itself is tested."""
    params = PARAMS.model_copy(update={"max_accuracy_drop": 0.25})
    assert verdict(variant(correct=correct), variant(correct=100.0), params).decision is decision


def test_a_faster_more_accurate_and_more_reliable_challenger_is_promoted() -> None:
    analysis = verdict(variant(errors=0.0, latency_p99_s=0.001, correct=100.0))
    assert analysis.decision is Decision.PROMOTE


def test_every_failed_check_is_named_in_the_reason() -> None:
    analysis = verdict(variant(errors=100.0, latency_p99_s=1.0, correct=10.0))
    assert analysis.decision is Decision.ROLL_BACK
    assert analysis.reason == "the challenger is worse on error rate and p99 latency and online accuracy"


@pytest.mark.parametrize("who", ["champion", "challenger"])
def test_either_variant_below_the_traffic_floor_holds_however_bad(who: str) -> None:
    few = variant(requests=199.0, errors=199.0)
    analysis = verdict(few, HEALTHY) if who == "challenger" else verdict(variant(errors=500.0), few)
    assert analysis.decision is Decision.HOLD
    assert analysis.reason == "fewer than 200 requests per variant in 10m"
    assert [found.passed for found in analysis.checks[:3]] == [None, None, None]


def test_exactly_the_traffic_floor_is_enough() -> None:
    analysis = verdict(variant(requests=200.0, errors=2.0), variant(requests=200.0, errors=2.0))
    assert analysis.decision is Decision.PROMOTE
    assert check(analysis, "requests").passed is True


@pytest.mark.parametrize("who", ["champion", "challenger"])
def test_either_variant_short_of_feedback_holds_a_healthy_challenger(who: str) -> None:
    short = variant(feedback=49.0, correct=44.0)
    analysis = verdict(short) if who == "challenger" else verdict(HEALTHY, short)
    assert analysis.decision is Decision.HOLD
    assert analysis.reason == "fewer than 50 feedback labels per variant in 10m"
    assert check(analysis, "online accuracy").passed is None


def test_exactly_the_feedback_floor_is_enough_to_judge_accuracy() -> None:
    assert verdict(variant(feedback=50.0, correct=45.0)).decision is Decision.PROMOTE
    assert verdict(variant(feedback=50.0, correct=40.0)).decision is Decision.ROLL_BACK


def test_a_failing_challenger_is_rolled_back_before_feedback_arrives() -> None:
    analysis = verdict(variant(feedback=0.0, correct=0.0, errors=500.0))
    assert analysis.decision is Decision.ROLL_BACK
    assert analysis.reason == "the challenger is worse on error rate"


def test_with_no_feedback_floor_one_label_each_still_judges_accuracy() -> None:
    params = PARAMS.model_copy(update={"min_feedback": 0})
    no_labels = variant(feedback=0.0, correct=0.0)
    promoted = verdict(no_labels, no_labels, params)
    assert promoted.decision is Decision.PROMOTE
    assert check(promoted, "online accuracy").passed is None
    assert verdict(variant(feedback=1.0, correct=0.0), variant(feedback=1.0, correct=1.0), params).decision is (
        Decision.ROLL_BACK
    )


def test_the_version_row_lists_every_version_served_or_n_a() -> None:
    assert check(verdict(variant(versions=("2", "3")), variant(versions=("1", "4"))), "version") == Check(
        "version", "1, 4", "2, 3", "one each", None
    )
    assert check(verdict(variant(versions=())), "version") == Check("version", "1", "n/a", "one each", None)


@pytest.mark.parametrize("versions", [(), ("2", "3")])
def test_a_variant_without_exactly_one_version_holds(versions: tuple[str, ...]) -> None:
    for analysis in (verdict(variant(versions=versions)), verdict(HEALTHY, variant(versions=versions))):
        assert analysis.decision is Decision.HOLD
        assert analysis.reason == "a variant served more than one version (or none) in 10m"
        assert check(analysis, "version").passed is None


def test_no_latency_from_the_champion_leaves_latency_unjudged() -> None:
    for champion_latency in (0.0, math.nan):
        analysis = verdict(variant(latency_p99_s=5.0), variant(latency_p99_s=champion_latency))
        assert check(analysis, "p99 latency").passed is None
        assert analysis.decision is Decision.PROMOTE


def test_unknown_numbers_show_as_n_a() -> None:
    analysis = verdict(VariantStats(), VariantStats())
    assert analysis.checks[1] == Check("error rate", "n/a", "n/a", "<= champion + 1.00%", None)
    assert analysis.checks[2].champion == "n/a" and analysis.checks[4].champion == "n/a"


def test_a_window_given_to_decide_is_the_one_reported() -> None:
    analysis = decide({"champion": HEALTHY, "challenger": variant(requests=1.0)}, PARAMS, window="1h")
    assert analysis.window == "1h" and analysis.reason == "fewer than 200 requests per variant in 1h"


def test_rates_of_a_variant_without_traffic_are_unknown() -> None:
    idle = VariantStats()
    assert math.isnan(idle.error_rate) and math.isnan(idle.accuracy)
    assert VariantStats(requests=8.0, errors=2.0, feedback=4.0, correct=3.0).error_rate == 0.25
    assert VariantStats(requests=8.0, errors=2.0, feedback=4.0, correct=3.0).accuracy == 0.75


def test_the_challenger_version_is_known_only_when_it_served_one() -> None:
    assert verdict(variant(versions=("7",))).challenger_version == "7"
    assert verdict(variant(versions=("7", "8"))).challenger_version is None
    assert verdict(variant(versions=())).challenger_version is None
