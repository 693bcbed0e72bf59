"""Load, validate and split the dataset.

Forkers: this is one of the files to edit for your own data. Whatever the source,
return a frame with the columns ``text``, ``label`` and ``group``: rows that share
a group (here the movie) never land in two splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from mlops.config import DataParams
from mlops.errors import MlopsError

COLUMNS = ["text", "label", "group"]


class DataError(MlopsError):
    """The dataset cannot be used as it is."""


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        return [("train", self.train), ("validation", self.validation), ("test", self.test)]


def load_dataset(params: DataParams) -> pd.DataFrame:
    """Read the raw file and return clean, validated rows with the columns COLUMNS."""
    path = params.path
    if not path.exists():
        raise DataError(f"{path} not found: run `dvc pull` to fetch the data, or fix data.path in params.yaml")
    if path.is_dir():
        raise DataError(f"{path} is a folder: set data.path in params.yaml to the CSV file")
    try:
        # The python engine, unlike the C one, leaves the fields a short record lacks missing instead of "".
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, engine="python")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty (not even a header row): restore it with `dvc checkout data.dvc`") from None
    except (ValueError, OSError, EOFError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(
            f"{path} is not a readable CSV file ({reason}): restore it with `dvc checkout data.dvc`"
        ) from None
    # keep_default_na=False reads empty fields as "", so a missing value means a record with too few fields.
    short = raw.isna().any(axis=1)
    if short.any():
        raise DataError(
            f"{path} record {short.idxmax() + 1} has fewer fields than the header "
            f"({short.sum()} such record{'s' if short.sum() > 1 else ''}): the file is truncated or damaged: "
            "restore it with `dvc checkout data.dvc`"
        )

    wanted = {"text": params.text_column, "label": params.label_column, "group": params.group_column}
    missing = sorted(column for column in wanted.values() if column not in raw.columns)
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(map(repr, missing))} (it has {', '.join(map(repr, raw.columns))}): "
            "fix data.*_column in params.yaml"
        )
    frame = raw[list(wanted.values())].set_axis(list(wanted), axis=1)
    frame = frame[~frame["label"].isin(params.ignore_labels)]
    frame = frame.assign(text=frame["text"].str.strip())
    frame = frame[frame["text"] != ""]

    unknown = sorted(set(frame["label"]) - set(params.labels))
    if unknown:
        raise DataError(
            f"{path} has unknown label(s) {', '.join(map(repr, unknown))}: "
            f"add them to data.labels or data.ignore_labels in params.yaml (labels are {params.labels})"
        )
    frame = frame.drop_duplicates("text", ignore_index=True)
    if frame.empty:
        raise DataError(f"{path} has no usable rows (non-empty text with a label in {params.labels})")
    absent = [label for label in params.labels if label not in set(frame["label"])]
    if absent:
        raise DataError(
            f"{path} has no rows labelled {', '.join(map(repr, absent))}: every label in data.labels needs examples"
        )

    # A row without a group is its own group, so it cannot leak across splits with others.
    no_group = frame["group"].str.strip() == ""
    frame.loc[no_group, "group"] = "row-" + frame.index[no_group].astype(str)

    if params.max_rows is not None and len(frame) > params.max_rows:
        frame = frame.sample(n=params.max_rows, random_state=0).sort_index(ignore_index=True)
    return frame


def _hold_out(frame: pd.DataFrame, fraction: float, seed: int, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off about ``fraction`` of the rows, whole groups at a time, stratified by label."""
    folds = max(2, round(1 / fraction))
    groups = frame["group"].nunique()
    if groups < folds:
        raise DataError(
            f"the {name} split needs at least {folds} groups but the data has {groups}: "
            "use more data or a larger split size"
        )
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    kept, held = next(splitter.split(frame, frame["label"], frame["group"]))
    return frame.iloc[kept].reset_index(drop=True), frame.iloc[held].reset_index(drop=True)


def split_dataset(frame: pd.DataFrame, params: DataParams, seed: int) -> Splits:
    """Deterministic train/validation/test splits, grouped by ``group`` and stratified by label."""
    rest, test = _hold_out(frame, params.test_size, seed, "test")
    train, validation = _hold_out(rest, params.validation_size / (1 - params.test_size), seed, "validation")
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        if split["label"].nunique() < len(params.labels):
            raise DataError(f"the {name} split lacks some labels: use more data or a larger split size")
    return Splits(train=train, validation=validation, test=test)


def load_splits(params: DataParams, seed: int) -> Splits:
    return split_dataset(load_dataset(params), params, seed)


def encode_labels(labels: pd.Series, names: list[str]) -> np.ndarray:
    return labels.map({name: index for index, name in enumerate(names)}).to_numpy(dtype=np.int64)


def describe(splits: Splits, labels: list[str]) -> dict[str, dict[str, int]]:
    """Row counts and label balance per split, for metrics.json and the reports."""
    return {
        name: {"rows": len(split), **{label: int((split["label"] == label).sum()) for label in labels}}
        for name, split in splits.items()
    }
