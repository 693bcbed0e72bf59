"""How long `mlops report` takes on the default project after the pipeline ran. Target: at most 10 s.

The report's cost does not depend on the model, only on the size of what the pipeline wrote: so a throwaway
copy of the repository gets, on main and on a pull-request branch, the evaluate/ outputs the default
params produce (the real default test split, curves thinned as `mlops evaluate` thins them, a 5-epoch
history, per-row predictions, so the paired bootstrap of every headline metric runs), from scored-at-random
predictions instead of a trained model. The branch also changes a param.
The peer, measured in the same run on the same two commits, is `dvc metrics diff main`.

    python bench/bench_report.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from common import BIN, ENV, copy_repository, sh
from mlops import predictions
from mlops.config import load_params
from mlops.ml import evaluate as evaluate_lib
from mlops.ml.data import describe, encode_labels, load_splits

RUNS = 3
TARGET_SECONDS = 10.0


def write_outputs(project: Path, seed: int) -> None:
    """evaluate/ as `mlops evaluate` writes it for the default params, from random scores."""
    params = load_params(project / "params.yaml")
    cwd = Path.cwd()
    os.chdir(project)
    try:
        splits = load_splits(params.data)
    finally:
        os.chdir(cwd)
    labels = params.data.labels
    y_true = encode_labels(splits.test["label"], labels)
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(len(labels)), size=len(y_true))
    texts = splits.test["text"].tolist()
    scored = {"": probabilities, predictions.BASELINE_PREFIX: probabilities}
    rows = predictions.table(predictions.row_keys(texts), labels, y_true, scored)
    metrics = evaluate_lib.classification_metrics(y_true, probabilities, labels)
    metrics.update({"model_size_mb": 17.2, "latency_p50_ms": 4.1, "latency_p95_ms": 6.3})
    metrics["baseline"] = {key: metrics[key] for key in ("accuracy", "macro_f1", "roc_auc", "log_loss")}
    metrics["samples"] = describe(splits, labels)
    plots = project / "evaluate" / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    (project / "evaluate" / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (project / "evaluate" / "predictions.csv").write_text(predictions.to_csv(rows))
    for name, frame in evaluate_lib.curves(y_true, probabilities, labels).items():
        frame.round(4).to_csv(plots / f"{name}.csv", index=False)
    epochs = params.train.epochs
    history = pd.DataFrame(
        {
            "epoch": range(1, epochs + 1),
            "train_loss": np.linspace(0.69, 0.35, epochs) + rng.normal(0, 0.01, epochs),
            "validation_loss": np.linspace(0.69, 0.45, epochs) + rng.normal(0, 0.01, epochs),
            "validation_accuracy": np.linspace(0.55, 0.78, epochs),
        }
    )
    history.round(4).to_csv(plots / "training.csv", index=False)


def median_seconds(command: list[str], cwd: Path) -> float:
    timings = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=ENV, check=True, capture_output=True)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-report-") as temporary:
        project = Path(temporary)
        copy_repository(project)
        sh("git", "init", "-q", "-b", "main", cwd=project)
        sh("dvc", "pull", "-q", "data.dvc", cwd=project)
        write_outputs(project, seed=1)
        sh("git", "add", "-A", cwd=project)
        sh("git", "commit", "-q", "-m", "main with pipeline results", cwd=project)
        sh("git", "checkout", "-q", "-b", "feature", cwd=project)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["train"]["learning_rate"] *= 2
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        write_outputs(project, seed=2)
        sh("git", "commit", "-q", "-am", "a pull request", cwd=project)

        report = median_seconds([str(BIN / "mlops"), "report", "--out", "report/report.md"], project)
        peer = median_seconds([str(BIN / "dvc"), "metrics", "diff", "main"], project)
        rows = len(pd.read_csv(project / "evaluate" / "plots" / "confusion.csv"))

    print(f"default project: {rows} test rows, {RUNS} runs each, median wall time")
    print(f"{'command':<28}{'seconds':>10}{'ratio to peer':>16}")
    print(f"{'mlops report':<28}{report:>10.2f}{report / peer:>16.2f}")
    print(f"{'dvc metrics diff (peer)':<28}{peer:>10.2f}{1.0:>16.2f}")
    print(f"target: mlops report <= {TARGET_SECONDS:.0f} s: {'met' if report <= TARGET_SECONDS else 'NOT met'}")


if __name__ == "__main__":
    main()
