"""The server's Prometheus metrics. The names and labels are a contract with monitoring/ (alerts,
recording rules, the Grafana dashboard and `mlops canary analyze`): rename nothing without them."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mlops.serving.router import VARIANTS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
# What each server process holds alike (a failed load fails in every process): merged by the maximum, not summed.
SAME_IN_EVERY_PROCESS = frozenset({"mlops_model_load_failures"})
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CHARS_BUCKETS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    """One registry per server, so several apps (as in the tests) never share counters."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "mlops_requests", "Prediction requests by variant and status.", ["variant", "status"], registry=registry
        )
        self.latency = Histogram(
            "mlops_request_latency_seconds",
            "Time from receiving a prediction request to answering it.",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.predictions = Counter(
            "mlops_predictions", "Predicted labels by variant.", ["variant", "label"], registry=registry
        )
        self.feedback = Counter(
            "mlops_feedback",
            "True labels received, by whether the variant got them right.",
            ["variant", "correct"],
            registry=registry,
        )
        self.online_accuracy = Gauge(
            "mlops_online_accuracy",
            "Share of correct predictions among those with feedback, since start.",
            ["variant"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "mlops_batch_size",
            "Texts scored together in one forward pass.",
            ["variant"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.input_chars = Histogram(
            "mlops_input_chars", "Characters per input text.", ["variant"], buckets=CHARS_BUCKETS, registry=registry
        )
        self.model_info = Gauge(
            "mlops_model_info",
            "1 for the model version each variant serves.",
            ["variant", "version", "model"],
            registry=registry,
        )
        self.load_failures = Counter(
            "mlops_model_load_failures",
            "Model versions that failed to load (the previous one kept serving).",
            ["variant"],
            registry=registry,
        )
        self.rejected = Counter(
            "mlops_rejected_requests",
            "Prediction requests refused with 503 because serving.max_queued_texts were already waiting.",
            ["variant"],
            registry=registry,
        )
        self.training_label_share = Gauge(
            "mlops_training_label_share",
            "Label mix of the data the served model was trained on.",
            ["variant", "label"],
            registry=registry,
        )
        self._served: dict[str, tuple[str, str]] = {}
        self._children: dict[tuple[object, ...], Counter | Histogram] = {}
        self._feedback_counts: dict[str, list[int]] = {}
        # Series that exist at 0 from the start: increase() and rate() ignore a series' first sample, so
        # the first burst of errors on a fresh series would be invisible to the alerts and the canary.
        for variant in VARIANTS:
            for status in ("200", "500"):
                self.requests.labels(variant=variant, status=status)
            for correct in ("true", "false"):
                self.feedback.labels(variant=variant, correct=correct)
            self.load_failures.labels(variant=variant)
            self.rejected.labels(variant=variant)

    def answered(self, variant: str, status: int, seconds: float) -> None:
        """A prediction request's status and latency."""
        self._child(self.requests, variant, str(status)).inc()
        self._child(self.latency, variant).observe(seconds)

    def scored(self, variant: str, texts: list[str], predicted: list[str]) -> None:
        """The length of each text a request sent and the labels predicted for them."""
        chars = self._child(self.input_chars, variant)
        for text in texts:
            chars.observe(len(text))
        for label, count in collections.Counter(predicted).items():
            self._child(self.predictions, variant, label).inc(count)

    def _child(self, metric: Counter | Histogram, *labels: str) -> Counter | Histogram:
        """``metric.labels(*labels)``, looked up once: the lookup costs more than the update, on every request.
        Only for series never removed (a removed child would keep counting unseen)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def model_loaded(self, variant: str, model: str, version: str, label_share: dict[str, float]) -> None:
        """Point the info and label-share gauges at a newly served version, dropping the old label set."""
        self.model_unloaded(variant)
        self.model_info.labels(variant=variant, version=version, model=model).set(1)
        self.batch_size.labels(variant=variant)
        self._served[variant] = (version, model)
        for label, share in label_share.items():
            self.training_label_share.labels(variant=variant, label=label).set(share)
            self.predictions.labels(variant=variant, label=label)

    def model_unloaded(self, variant: str) -> None:
        if variant in self._served:
            version, model = self._served.pop(variant)
            self.model_info.remove(variant, version, model)
        for labels in [sample.labels for metric in self.training_label_share.collect() for sample in metric.samples]:
            if labels["variant"] == variant:
                self.training_label_share.remove(variant, labels["label"])

    def record_feedback(self, variant: str, correct: bool) -> None:
        self.feedback.labels(variant=variant, correct="true" if correct else "false").inc()
        right, total = self._feedback_counts.setdefault(variant, [0, 0])
        self._feedback_counts[variant] = [right + correct, total + 1]
        self.online_accuracy.labels(variant=variant).set((right + correct) / (total + 1))


def merge_expositions(expositions: Sequence[str]) -> bytes:
    """One exposition for several server processes (serving/processes.py): counts and histograms summed, gauges
    and what every process holds alike by their maximum (timestamps by their minimum), and the online accuracy
    recomputed from the summed feedback."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for exposition in expositions:
        for family in text_string_to_metric_families(exposition):
            families.setdefault(family.name, family)
            merged = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if key not in merged:
                    merged[key] = sample.value
                elif sample.name.endswith("_created"):
                    merged[key] = min(merged[key], sample.value)
                elif family.type == "gauge" or family.name in SAME_IN_EVERY_PROCESS:
                    merged[key] = max(merged[key], sample.value)
                else:
                    merged[key] += sample.value
    feedback = values.get("mlops_feedback", {})
    for key in values.get("mlops_online_accuracy", {}):
        variant = dict(key[1])["variant"]
        right, wrong = (
            feedback.get(("mlops_feedback_total", (("correct", correct), ("variant", variant))), 0.0)
            for correct in ("true", "false")
        )
        values["mlops_online_accuracy"][key] = right / (right + wrong)

    class Merged:
        def collect(self) -> Iterable[Metric]:
            for name, family in families.items():
                metric = Metric(name, family.documentation, family.type, family.unit)
                for (sample_name, labels), value in values[name].items():
                    metric.add_sample(sample_name, dict(labels), value)
                yield metric

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry)
