"""Distributed training on CPU: `mlops train` in one process, then under `torchrun` with N processes (gloo).

    python bench/bench_distributed.py [--max-rows N] [--epochs N] [--processes N]

Trains the same params both ways in one copy of the repository, evaluates each model in one process, and
prints a markdown table: training time, validation and test accuracy, test log loss. Same examples per
optimiser step both ways; the batches differ, so the results differ a little (README, Distributed training).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from common import BIN, add_training_arguments, timed, training_project


def _train_and_evaluate(project: Path, launcher: list[str]) -> dict[str, float]:
    for leftover in ("models", "evaluate", "mlartifacts", "mlflow.db"):
        path = project / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    seconds = timed(*launcher, str(BIN / "mlops"), "train", cwd=project)
    timed(str(BIN / "mlops"), "evaluate", cwd=project)
    metrics = json.loads((project / "evaluate" / "metrics.json").read_text())
    history = json.loads((project / "models" / "history.json").read_text())
    best = max(history, key=lambda row: row["validation_accuracy"])
    return {
        "training seconds": seconds,
        "validation accuracy (best epoch)": best["validation_accuracy"],
        "test accuracy": metrics["accuracy"],
        "test log loss": metrics["log_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()

    with training_project("bench-distributed-", args) as (project, params):
        params["evaluate"] |= {"latency_requests": 20, "fail_without_skill": False}  # the accuracy is the point
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        single = _train_and_evaluate(project, [])
        torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(args.processes), "--no-python"]
        several = _train_and_evaluate(project, torchrun)

    size = f"{args.max_rows or 'all'} rows, {params['train']['epochs']} epochs, batch {params['train']['batch_size']}"
    print(f"One process against {args.processes} (torchrun, gloo), {size}\n")
    print(f"| measure | 1 process | {args.processes} processes |\n|---|---:|---:|")
    for name, value in single.items():
        digits = 1 if name == "training seconds" else 4
        print(f"| {name} | {value:.{digits}f} | {several[name]:.{digits}f} |")


if __name__ == "__main__":
    main()
