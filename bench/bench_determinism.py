"""What the CPU kernel pins cost: `mlops train` with reproducibility.pin_cpu_kernels on and off, same run.

    python bench/bench_determinism.py [--max-rows N] [--epochs N] [--repeats N]

Trains the same params in one copy of the repository with the pins off and on, alternating, and prints a
markdown table of the training times (median over the repeats) and their ratio (target: at most 1.5).
"""

from __future__ import annotations

import argparse
import statistics

import yaml

from common import add_training_arguments, timed, training_project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_arguments(parser)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    with training_project("bench-determinism-", args) as (project, params):
        seconds: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):
            for pin in (False, True):
                params["reproducibility"]["pin_cpu_kernels"] = pin
                (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                seconds[pin].append(timed("mlops", "train", cwd=project))

    unpinned, pinned = statistics.median(seconds[False]), statistics.median(seconds[True])
    rows = [
        ("`mlops train`, kernels not pinned", f"{unpinned:.1f} s", ""),
        ("`mlops train`, kernels pinned (oneMKL COMPATIBLE, ATen and oneDNN AVX2)", f"{pinned:.1f} s", ""),
        ("pinned / not pinned", f"{pinned / unpinned:.2f}x", "<= 1.5x"),
    ]
    size = f"{args.max_rows or 'all'} rows, {params['train']['epochs']} epochs, median of {args.repeats}"
    print(f"Training time with and without the CPU kernel pins ({size}, {params['threads']} thread)\n")
    print("| measure | value | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()
