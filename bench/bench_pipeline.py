"""Time the pipeline from a fresh clone with the default params, and compare the model with its baseline.

    python bench/bench_pipeline.py [--repo PATH]

Prints a markdown table: the full `dvc repro` (target: at most 180 s on 2 cores), a no-op
`dvc repro` (target: at most 1.5 s, median of 5), and test accuracy of the transformer
against the baseline (mlops.ml.spec.BASELINE_NAME) measured in the same run (target: at least 0.74).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import REPO_ROOT, timed
from mlops.ml.spec import BASELINE_NAME


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
        clone = Path(scratch) / "clone"
        subprocess.run(["git", "clone", "-q", str(args.repo), str(clone)], check=True)
        pull = timed("dvc", "pull", "-q", "data.dvc", cwd=clone)
        repro = timed("dvc", "repro", "--force", cwd=clone)
        noop = statistics.median(timed("dvc", "repro", cwd=clone) for _ in range(5))
        metrics = json.loads((clone / "evaluate" / "metrics.json").read_text())

    accuracy, baseline = metrics["accuracy"], metrics["baseline"]["accuracy"]
    rows = [
        ("dvc pull (data)", f"{pull:.1f} s", ""),
        ("dvc repro, fresh clone, default params", f"{repro:.0f} s", "<= 180 s"),
        ("dvc repro, nothing changed (median of 5)", f"{noop:.2f} s", "<= 1.5 s"),
        ("test accuracy, transformer", f"{accuracy:.4f}", ">= 0.74"),
        (f"test accuracy, {BASELINE_NAME}", f"{baseline:.4f}", "(baseline)"),
        ("transformer / baseline accuracy", f"{accuracy / baseline:.3f}", "1.0 = matches the baseline"),
        (
            "test macro-F1, transformer / baseline",
            f"{metrics['macro_f1']:.4f} / {metrics['baseline']['macro_f1']:.4f}",
            "",
        ),
        ("p95 latency per request", f"{metrics['latency_p95_ms']:.1f} ms", ""),
    ]
    print("| measure | value | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()
