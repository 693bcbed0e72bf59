"""Load, validate and split the dataset.

Forkers: this is one of the files to edit for your own data. Whatever the source,
return a frame with the columns ``text``, ``label`` and ``group``: rows that share
a group (data.group_column; here the movie) never land in two splits. With
``group_column: null`` every row is its own group and the split is by row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

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


def _read(params: DataParams) -> pd.DataFrame:
    """The raw file's rows, every label, with the columns COLUMNS (``group`` empty without data.group_column)."""
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
    if params.group_column is None:
        del wanted["group"]
    missing = sorted(column for column in wanted.values() if column not in raw.columns)
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(map(repr, missing))} (it has {', '.join(map(repr, raw.columns))}): "
            "fix data.*_column in params.yaml"
        )
    frame = raw[list(wanted.values())].set_axis(list(wanted), axis=1)
    if params.group_column is None:
        frame = frame.assign(group="")
    frame = frame.assign(text=frame["text"].str.strip())
    return frame[frame["text"] != ""]


def load_dataset(params: DataParams) -> pd.DataFrame:
    """Read the raw file and return clean, validated rows with the columns COLUMNS."""
    path = params.path
    frame = _read(params)
    frame = frame[~frame["label"].isin(params.ignore_labels)]

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


def _group_counts(frame: pd.DataFrame) -> str:
    counts = frame.groupby("label")["group"].nunique()
    return ", ".join(f"{label} {count}" for label, count in counts.items())


def _split_unit(params: DataParams) -> str:
    """What a split moves at a time, as the error messages name it."""
    return "rows" if params.group_column is None else f"groups of data.group_column {params.group_column!r}"


def _sizes(params: DataParams) -> str:
    return f"data.test_size {params.test_size:g}, data.validation_size {params.validation_size:g}"


def _fix(params: DataParams) -> str:
    if params.group_column is None:
        return "add rows for the rarest labels, or lower data.test_size / data.validation_size"
    return (
        "set data.group_column: null to split by row (if rows of one group may share splits), "
        "add data with more groups, or lower data.test_size / data.validation_size"
    )


def _hold_out(
    frame: pd.DataFrame, fraction: float, seed: int, name: str, params: DataParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off about ``fraction`` of the rows, whole groups at a time, stratified by label."""
    folds = max(2, round(1 / fraction))
    groups = frame["group"].nunique()
    if groups < folds:
        raise DataError(
            f"the {name} split ({_sizes(params)}) needs at least {folds} {_split_unit(params)} but there are "
            f"{groups} (per label: {_group_counts(frame)}): {_fix(params)}"
        )
    if params.group_column is None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        kept, held = next(splitter.split(frame, frame["label"]))
    else:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        kept, held = next(splitter.split(frame, frame["label"], frame["group"]))
    return frame.iloc[kept].reset_index(drop=True), frame.iloc[held].reset_index(drop=True)


def split_dataset(frame: pd.DataFrame, params: DataParams) -> Splits:
    """Train/validation/test splits fixed by ``data.split_seed``, grouped by ``group`` and stratified by label."""
    seed = params.split_seed
    rest, test = _hold_out(frame, params.test_size, seed, "test", params)
    train, validation = _hold_out(rest, params.validation_size / (1 - params.test_size), seed, "validation", params)
    splits = Splits(train=train, validation=validation, test=test)
    for name, split in splits.items():
        absent = [label for label in params.labels if label not in set(split["label"])]
        if absent:
            raise DataError(
                f"the {name} split ({_sizes(params)}) has no rows labelled {', '.join(map(repr, absent))}: "
                f"every label needs {_split_unit(params)} in every split, and the data has per label "
                f"{_group_counts(frame)}: {_fix(params)}"
            )
    return splits


def load_splits(params: DataParams) -> Splits:
    return split_dataset(load_dataset(params), params)


def pretraining_texts(params: DataParams, splits: Splits) -> list[str]:
    """The unlabelled text a model may learn the language from: the training split's texts and the rows of
    data.ignore_labels (here plot synopses), but nothing of a group in the validation or test split.

    With data.max_rows, the ignored rows are subsampled in the same proportion as the labelled ones.
    """
    rows = _read(params)
    is_ignored = rows["label"].isin(params.ignore_labels)
    ignored = rows[is_ignored].drop_duplicates("text", ignore_index=True)
    if params.max_rows is not None:
        share = min(1.0, params.max_rows / max(1, int((~is_ignored).sum())))
        ignored = ignored.sample(frac=share, random_state=0).sort_index(ignore_index=True)
    held_out = pd.concat([splits.validation, splits.test])
    held_out_groups, held_out_texts = set(held_out["group"]), set(held_out["text"])
    kept = ignored[~ignored["group"].isin(held_out_groups) & ~ignored["text"].isin(held_out_texts)]
    return splits.train["text"].tolist() + kept["text"].tolist()


def encode_labels(labels: pd.Series, names: list[str]) -> np.ndarray:
    return labels.map({name: index for index, name in enumerate(names)}).to_numpy(dtype=np.int64)


def describe(splits: Splits, labels: list[str]) -> dict[str, dict[str, int]]:
    """Row counts and label balance per split, for metrics.json and the reports."""
    return {
        name: {"rows": len(split), **{label: int((split["label"] == label).sum()) for label in labels}}
        for name, split in splits.items()
    }
