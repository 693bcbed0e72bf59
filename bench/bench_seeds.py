"""How much the headline metrics move when only the training seed changes, beside the test set's own noise.

Trains the default model (params.yaml) several times on one fixed split, changing only the seed the model is
initialised and shuffled with, and scores each on the test split. Prints, per headline metric, the spread over
seeds and the width of the 95% bootstrap interval of one model's score on the test rows, and the paired
interval of the change between two seeds: what `report.regression_tolerance` and `gate.max_regression` should
sit above. A default training takes about 2 minutes alone on one core; on a shared machine much longer.

    python bench/bench_seeds.py [--seeds 42 1 2] [--keep DIR]

--keep saves each seed's test probabilities in DIR and reuses those already there.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from common import REPO_ROOT
from mlops import stats
from mlops.config import load_params
from mlops.ml import train as train_lib
from mlops.ml.data import encode_labels, load_splits
from mlops.ml.model import TextClassifier
from mlops.ml.spec import METRICS

DEFAULT_SEEDS = [42, 1, 2, 3, 4]


def scored(seed: int, keep: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(test labels, test probabilities) of the default model trained with ``seed``, the split fixed."""
    params = load_params(REPO_ROOT / "params.yaml")
    os.chdir(REPO_ROOT)
    splits = load_splits(params.data)
    y_true = encode_labels(splits.test["label"], params.data.labels)
    saved = keep / f"seed-{seed}.npy" if keep else None
    if saved is not None and saved.is_file():
        return y_true, np.load(saved)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-seeds-") as model_dir:
        train_lib.train(splits, params.model_copy(update={"seed": seed}), Path(model_dir))
        probabilities = TextClassifier(model_dir).predict_proba(splits.test["text"].tolist())
    print(f"seed {seed}: trained and scored in {time.perf_counter() - start:.0f} s", flush=True)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        np.save(saved, probabilities)
    return y_true, probabilities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    parser.add_argument("--keep", type=Path, default=None)
    arguments = parser.parse_args()
    runs = {}
    for seed in arguments.seeds:
        y_true, probabilities = scored(seed, arguments.keep)
        runs[seed] = stats.Predictions(y_true, probabilities.argmax(axis=1), probabilities)
    first, *others = runs.values()
    print(f"\n{len(runs)} seeds ({', '.join(map(str, runs))}), one split, {len(first)} test rows")
    header = ["metric", "mean", "seed sd", "seed range", "95% interval width", "paired change ±", "significant"]
    print("".join(f"{name:>19}" for name in header))
    for name in METRICS.headline:
        scorer = METRICS.get(name).scorer
        if scorer is None:
            print(f"{name:>19}  no scorer declared in mlops.ml.spec")
            continue
        values = np.array([stats.point(scorer, run) for run in runs.values()])
        widths = [(found.high - found.low) for found in (stats.interval(scorer, run) for run in runs.values())]
        changes = [stats.paired_difference(scorer, first, other) for other in others]
        half_widths = [(change.high - change.low) / 2 for change in changes]
        significant = sum(change.low > 0 or change.high < 0 for change in changes)
        cells = [
            f"{values.mean():.4f}",
            f"{values.std(ddof=1):.4f}",
            f"{values.max() - values.min():.4f}",
            f"{np.median(widths):.4f}",
            f"{np.median(half_widths):.4f}",
            f"{significant} of {len(changes)}",
        ]
        print(f"{name:>19}" + "".join(f"{cell:>19}" for cell in cells))
    print(
        "\nseed sd/range: the spread of the metric over seeds. 95% interval width: one model's bootstrap interval "
        "over the test rows (median over seeds). paired change ±: half the width of the paired interval of the "
        f"change from seed {arguments.seeds[0]} to each other seed (median); significant: how many of those "
        "seed-only changes have an interval that excludes 0."
    )


if __name__ == "__main__":
    main()
