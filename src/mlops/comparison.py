"""The headline metrics' changes with their 95% bootstrap intervals, from two models' per-row predictions.

The report compares the workspace with the base, deploy the candidate with the champion re-scored on the same
split. Paired (resampled together) when both scored the same test rows, unpaired when the rows differ; no
intervals, with the reason, when a side has no usable predictions or the labels differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlops import stats
from mlops.ml.spec import METRICS
from mlops.paths import PREDICTIONS_FILE
from mlops.predictions import PredictionsError, Table, pair, read


@dataclass(frozen=True)
class Headline:
    differences: dict[str, stats.Difference] = field(default_factory=dict)  # new - base, per headline metric
    intervals: dict[str, stats.Interval] = field(default_factory=dict)  # the workspace model's own, per metric
    mcnemar: stats.McNemar | None = None  # paired rows only
    paired: bool = False
    rows: int = 0
    note: str | None = None  # why there are no intervals, or why they are unpaired
    unscored: list[str] = field(default_factory=list)  # headline metrics that declare no scorer


def _table(text: Table | str | None, who: str) -> tuple[Table | None, str | None]:
    if isinstance(text, Table):
        return text, None
    if text is None:
        return None, f"{who} has no `{PREDICTIONS_FILE}`"
    try:
        return read(text), None
    except PredictionsError as error:
        return None, f"{who}'s `{PREDICTIONS_FILE}` cannot be used ({error})"


def _scorers() -> tuple[dict[str, stats.Scorer], list[str]]:
    specs = [METRICS.get(name) for name in METRICS.headline]
    return {spec.name: spec.scorer for spec in specs if spec.scorer}, [spec.name for spec in specs if not spec.scorer]


def compare(base_text: Table | str | None, new_text: Table | str | None, base_name: str = "the base") -> Headline:
    """``new`` against ``base``: each a predictions file's text, a parsed Table, or None (not available)."""
    scorers, unscored = _scorers()
    new, why_not = _table(new_text, "the workspace")
    if new is None:
        return Headline(note=why_not, unscored=unscored)
    intervals = {name: stats.interval(scorer, new.model) for name, scorer in scorers.items()}
    base, why_not = _table(base_text, base_name)
    if base is None:
        return Headline(intervals=intervals, note=why_not, unscored=unscored)
    pairing = pair(base, new)
    if pairing is None:
        note = f"{base_name}'s predictions are for other labels ({', '.join(base.labels)})"
        return Headline(intervals=intervals, note=note, unscored=unscored)
    difference = stats.paired_difference if pairing.paired else stats.unpaired_difference
    return Headline(
        differences={name: difference(scorer, pairing.base, pairing.new) for name, scorer in scorers.items()},
        intervals=intervals,
        mcnemar=stats.mcnemar(pairing.base, pairing.new) if pairing.paired else None,
        paired=pairing.paired,
        rows=len(pairing.new),
        note=pairing.note,
        unscored=unscored,
    )
