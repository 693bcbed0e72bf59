"""What this project's metrics mean and what its model card says. The machinery reads only this.

Forkers: declare here every metric that ml/evaluate.py adds (direction, machine-dependence, whether it is a
headline metric or on the card, and for a headline metric how to score it per bootstrap resample: a scorer from
mlops.stats or your own with the same signature; without one it is compared by its value alone),
name your baseline, and write the card's prose in card.md beside this file.
"""

from __future__ import annotations

from pathlib import Path

from mlops import stats
from mlops.contract import MetricSpec, MetricSpecs

METRICS = MetricSpecs(
    MetricSpec("accuracy", headline=True, on_card=True, scorer=stats.accuracy),
    MetricSpec("macro_f1", headline=True, on_card=True, scorer=stats.macro_f1),
    MetricSpec("roc_auc", headline=True, on_card=True, scorer=stats.roc_auc),
    MetricSpec("log_loss", higher_is_better=False, headline=True, on_card=True, scorer=stats.log_loss),
    # Accuracy minus the majority-class rate (always answering the test split's most common label): the gate
    # wants it above zero, so a model that learned nothing is never promoted.
    MetricSpec("accuracy_over_majority"),
    MetricSpec("majority_rate", count=True),  # a property of the test data, not of the model: never compared
    MetricSpec("model_size_mb", higher_is_better=False, on_card=True),
    MetricSpec("latency_p50_ms", higher_is_better=False, machine_dependent=True),
    MetricSpec("latency_p95_ms", higher_is_better=False, machine_dependent=True, on_card=True),
    MetricSpec("support", count=True),
    MetricSpec("rows", count=True),
)

# The classical model ml/evaluate.py trains on the same split as a yardstick (metrics.json `baseline`).
BASELINE_NAME = "TF-IDF + logistic regression"

# The model card's prose: Markdown with {labels}, {max_length} and {registered_model} filled in at deploy.
CARD_TEMPLATE = Path(__file__).with_name("card.md")
