"""What the machinery needs from the forker's part (`mlops.ml`): what each metric means, and the model's interface.

The forker declares their metrics in `mlops.ml.spec.METRICS`; the gate, report, deploy, model card and CLI read
only that. This module is light on purpose (no torch, no scikit-learn): the report and registry commands import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class MetricSpec:
    """One key of evaluate/metrics.json (top level, or the last part of a nested key such as per_class.X.f1)."""

    name: str
    higher_is_better: bool = True
    machine_dependent: bool = False  # measured on whatever machine ran it: shown, never flagged as a regression
    headline: bool = False  # compared with its uncertainty in the report, printed by `mlops evaluate`
    on_card: bool = False  # shown in the model card and copied into the registered version's tags
    count: bool = False  # a count, not a quality (rows, support): shown with the data, never compared
    # How to score it on bootstrap resamples of the test rows' predictions (see mlops.stats): a headline metric
    # with a scorer gets an interval and a significance test; one without is compared by its value alone.
    scorer: Callable[..., np.ndarray] | None = None


class MetricSpecs:
    """The declared metrics; a metric nobody declared is a higher-is-better quality metric."""

    def __init__(self, *specs: MetricSpec) -> None:
        self._by_name = {spec.name: spec for spec in specs}

    def __iter__(self) -> Iterator[MetricSpec]:
        return iter(self._by_name.values())

    def get(self, key: str) -> MetricSpec:
        """The spec of a dotted key: the key itself if declared, else its last part, else the default."""
        return self._by_name.get(key) or self._by_name.get(key.rsplit(".", 1)[-1]) or MetricSpec(key)

    @property
    def headline(self) -> list[str]:
        return [spec.name for spec in self if spec.headline]

    @property
    def on_card(self) -> list[str]:
        return [spec.name for spec in self if spec.on_card]


@runtime_checkable
class Classifier(Protocol):
    """What serving, deploy and evaluate need from a trained model (mlops.ml.model.load_classifier returns one)."""

    labels: list[str]
    training_label_share: dict[str, float]  # the label mix it was trained on (serving watches drift); {} if unknown

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """One row per text, one column per label (in the order of ``labels``), rows summing to 1."""
        ...

    def size_mb(self) -> float: ...
