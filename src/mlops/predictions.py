"""evaluate/predictions.csv: every test row's label, prediction and class probabilities, for the model and baseline.

One row per test row: ``row`` (a key made from the row's text, so two runs' rows can be matched whatever their
order), ``label``, ``predicted`` and ``p_<label>`` per label for the model, then the same prefixed ``baseline_``.
Probabilities keep 4 significant digits: small enough to commit, close enough for log loss.
Light on purpose (numpy and pandas): the report and the gate read it.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops.errors import MlopsError
from mlops.stats import Predictions

PROBABILITY_FORMAT = "%.4g"
BASELINE_PREFIX = "baseline_"


class PredictionsError(MlopsError):
    """A predictions file that cannot be used."""


def row_keys(texts: Iterable[str]) -> list[str]:
    """A short hash of each text; a repeated text gets ``-2``, ``-3``... in order, so every key is unique."""
    seen: Counter[str] = Counter()
    keys = []
    for text in texts:
        digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
        seen[digest] += 1
        keys.append(digest if seen[digest] == 1 else f"{digest}-{seen[digest]}")
    return keys


def check_finite(probabilities: np.ndarray, who: str) -> None:
    bad = ~np.isfinite(probabilities).all(axis=1)
    if bad.any():
        raise PredictionsError(
            f"{who} gave NaN or infinite probabilities for {int(bad.sum())} of {len(bad)} test rows "
            f"(first at row {int(np.flatnonzero(bad)[0])}): fix the model or its training (learning rate, "
            "data); nothing was written"
        )


def table(keys: list[str], labels: list[str], y_true: np.ndarray, scored: dict[str, np.ndarray]) -> pd.DataFrame:
    """The file's rows; ``scored`` maps a column prefix ("" for the model, BASELINE_PREFIX) to probabilities."""
    names = np.array(labels)
    columns: dict[str, object] = {"row": keys, "label": names[y_true]}
    for prefix, probabilities in scored.items():
        columns[f"{prefix}predicted"] = names[probabilities.argmax(axis=1)]
        for index, label in enumerate(labels):
            columns[f"{prefix}p_{label}"] = probabilities[:, index]
    return pd.DataFrame(columns)


def to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, float_format=PROBABILITY_FORMAT, lineterminator="\n")


@dataclass(frozen=True)
class Table:
    """A predictions file as read: row keys, the label names in column order, and each model's predictions."""

    keys: list[str]
    labels: list[str]
    model: Predictions
    baseline: Predictions | None


def _predictions(frame: pd.DataFrame, prefix: str, labels: list[str], y_true: np.ndarray) -> Predictions:
    codes = {label: index for index, label in enumerate(labels)}
    predicted = frame[f"{prefix}predicted"].astype(str).map(codes)
    if predicted.isna().any():
        raise PredictionsError(f"`{prefix}predicted` holds labels that have no probability column")
    probabilities = frame[[f"{prefix}p_{label}" for label in labels]].to_numpy(dtype=float)
    if not np.isfinite(probabilities).all():
        raise PredictionsError(f"`{prefix}p_*` holds missing or NaN probabilities")
    return Predictions(y_true, predicted.to_numpy(dtype=int), probabilities)


def read(text: str) -> Table:
    """Parse a predictions file; anything malformed is a PredictionsError saying what."""
    try:
        frame = pd.read_csv(io.StringIO(text), dtype={"row": str, "label": str})
    except (ValueError, pd.errors.ParserError) as error:
        raise PredictionsError(f"not a CSV file ({str(error).splitlines()[0] if str(error) else 'empty'})") from None
    missing = {"row", "label", "predicted"} - set(frame.columns)
    labels = [column.removeprefix("p_") for column in frame.columns if column.startswith("p_")]
    if missing or not labels:
        raise PredictionsError(f"columns missing: {', '.join(sorted(missing)) or 'p_<label>'}")
    if frame.empty:
        raise PredictionsError("no rows")
    if frame["row"].duplicated().any():
        raise PredictionsError("the `row` keys are not unique")
    codes = frame["label"].map({label: index for index, label in enumerate(labels)})
    if codes.isna().any():
        raise PredictionsError("`label` holds labels that have no probability column")
    y_true = codes.to_numpy(dtype=int)
    baseline_columns = {f"{BASELINE_PREFIX}predicted", *(f"{BASELINE_PREFIX}p_{label}" for label in labels)}
    return Table(
        keys=frame["row"].tolist(),
        labels=labels,
        model=_predictions(frame, "", labels, y_true),
        baseline=_predictions(frame, BASELINE_PREFIX, labels, y_true) if baseline_columns <= set(frame) else None,
    )


@dataclass(frozen=True)
class Pairing:
    """Base and new predictions ready to compare: on the same rows in the same order, or not paired and why."""

    base: Predictions
    new: Predictions
    paired: bool
    note: str | None  # why the rows are not paired


def _subset(predictions: Predictions, order: np.ndarray) -> Predictions:
    return Predictions(predictions.labels[order], predictions.predicted[order], predictions.probabilities[order])


def pair(base: Table, new: Table) -> Pairing | None:
    """Match base rows to new rows by key; None when the labels differ (nothing to compare)."""
    if base.labels != new.labels:
        return None
    if len(base.keys) != len(new.keys):
        note = f"the base has {len(base.keys)} test rows and the workspace {len(new.keys)}"
        return Pairing(base.model, new.model, False, note)
    position = {key: index for index, key in enumerate(base.keys)}
    if set(position) != set(new.keys):
        only_new = sum(key not in position for key in new.keys)
        note = f"{only_new} of the {len(new.keys)} test rows are not in the base's test rows"
        return Pairing(base.model, new.model, False, note)
    order = np.array([position[key] for key in new.keys])
    aligned = _subset(base.model, order)
    if not np.array_equal(aligned.labels, new.model.labels):
        return Pairing(base.model, new.model, False, "the same rows carry other labels in the base")
    return Pairing(aligned, new.model, True, None)
