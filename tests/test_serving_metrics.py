"""The server's metric series (serving/metrics.py): which exist at 0 from the start, and which go away.

A series born at its first error is invisible to increase() and rate(), so the canary and the alerts would
miss a fresh burst of 500s; a removed series must be absent, not 0. `sample` fails on a missing series,
`series_absent` tells the two apart.
"""

from __future__ import annotations

from prometheus_client import generate_latest

from mlops.serving.metrics import Metrics, merge_expositions
from monitoring_stack import sample, series_absent

SHARE = {"rotten": 0.25, "fresh": 0.75}


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_request_feedback_and_load_failure_series_exist_at_zero_before_any_traffic() -> None:
    text = exposition(Metrics())
    for variant in ("champion", "challenger"):
        for status in ("200", "500"):
            assert sample(text, "mlops_requests_total", variant=variant, status=status) == 0
        for correct in ("true", "false"):
            assert sample(text, "mlops_feedback_total", variant=variant, correct=correct) == 0
        assert sample(text, "mlops_model_load_failures_total", variant=variant) == 0


def test_a_loaded_model_has_its_info_its_label_shares_and_a_zero_prediction_series_per_label() -> None:
    metrics = Metrics()
    metrics.model_loaded("challenger", "reviews", "3", SHARE)
    text = exposition(metrics)
    assert sample(text, "mlops_model_info", variant="challenger", version="3", model="reviews") == 1
    assert sample(text, "mlops_training_label_share", variant="challenger", label="rotten") == 0.25
    assert sample(text, "mlops_training_label_share", variant="challenger", label="fresh") == 0.75
    assert sample(text, "mlops_predictions_total", variant="challenger", label="rotten") == 0
    assert sample(text, "mlops_predictions_total", variant="challenger", label="fresh") == 0
    assert series_absent(text, "mlops_model_info", variant="champion")


def test_unloading_removes_the_info_and_label_shares_instead_of_zeroing_them() -> None:
    metrics = Metrics()
    metrics.model_loaded("champion", "reviews", "1", SHARE)
    metrics.model_loaded("challenger", "reviews", "2", SHARE)
    metrics.model_unloaded("challenger")
    text = exposition(metrics)
    assert series_absent(text, "mlops_model_info", variant="challenger")
    assert series_absent(text, "mlops_training_label_share", variant="challenger")
    assert sample(text, "mlops_model_info", variant="champion", version="1", model="reviews") == 1
    assert sample(text, "mlops_training_label_share", variant="champion", label="fresh") == 0.75


def test_a_new_version_replaces_the_old_ones_series() -> None:
    metrics = Metrics()
    metrics.model_loaded("champion", "reviews", "1", SHARE)
    metrics.model_loaded("champion", "reviews", "2", {"rotten": 0.5, "fresh": 0.5})
    text = exposition(metrics)
    assert series_absent(text, "mlops_model_info", variant="champion", version="1")
    assert sample(text, "mlops_model_info", variant="champion", version="2", model="reviews") == 1
    assert sample(text, "mlops_training_label_share", variant="champion", label="rotten") == 0.5


def test_online_accuracy_is_the_running_share_of_correct_feedback() -> None:
    metrics = Metrics()
    for correct in (True, True, False, True):
        metrics.record_feedback("champion", correct)
    text = exposition(metrics)
    assert sample(text, "mlops_online_accuracy", variant="champion") == 0.75
    assert sample(text, "mlops_feedback_total", variant="champion", correct="true") == 3
    assert sample(text, "mlops_feedback_total", variant="champion", correct="false") == 1
    assert series_absent(text, "mlops_online_accuracy", variant="challenger")


def test_several_server_processes_expose_one_set_of_series_summed_where_they_count() -> None:
    """What /metrics answers for serving.server_processes > 1 (merge_expositions): one process's exposition comes
    back unchanged; counts and histograms add up; what every process holds alike is not multiplied; and the
    online accuracy is the accuracy of the summed feedback, not an average of the processes' accuracies."""
    first, second = Metrics(), Metrics()
    for metrics in (first, second):
        metrics.model_loaded("champion", "reviews", "3", SHARE)
        metrics.load_failures.labels(variant="champion").inc()
    first.requests.labels(variant="champion", status="200").inc(3)
    second.requests.labels(variant="champion", status="200").inc(4)
    first.latency.labels(variant="champion").observe(0.004)
    second.latency.labels(variant="champion").observe(0.3)
    first.record_feedback("champion", True)
    for correct in (True, False, False):
        second.record_feedback("champion", correct)

    assert merge_expositions([exposition(first)]).decode() == exposition(first)
    text = merge_expositions([exposition(first), exposition(second)]).decode()
    assert sample(text, "mlops_requests_total", variant="champion", status="200") == 7
    assert sample(text, "mlops_request_latency_seconds_count", variant="champion") == 2
    assert sample(text, "mlops_request_latency_seconds_bucket", variant="champion", le="0.005") == 1
    assert sample(text, "mlops_request_latency_seconds_bucket", variant="champion", le="+Inf") == 2
    assert sample(text, "mlops_feedback_total", variant="champion", correct="true") == 2
    assert sample(text, "mlops_online_accuracy", variant="champion") == 0.5  # 2 of 4; the processes had 1 and 1/3
    assert sample(text, "mlops_model_info", variant="champion", version="3", model="reviews") == 1
    assert sample(text, "mlops_training_label_share", variant="champion", label="fresh") == 0.75
    assert sample(text, "mlops_model_load_failures_total", variant="champion") == 1
    assert series_absent(text, "mlops_online_accuracy", variant="challenger")
