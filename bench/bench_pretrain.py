"""What the cached pretrained encoder saves a fresh clone: the pipeline with and without it, in the same run.

    python bench/bench_pretrain.py [--repo PATH]

Two clones of the repository at HEAD (commit first: the clones see committed files only). One pulls the data and
the pretrained encoder from the in-repo remote and runs `dvc repro` (what `make run` and CI do); the other pulls
the data only and pretrains from scratch (`dvc repro pretrain`, target: at most 15 minutes on 2 cores), then runs
the rest. Prints a markdown table with both times and their ratio, and whether the encoder pretrained from
scratch is the very one in the remote (same md5 as dvc.lock records).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import yaml

from common import REPO_ROOT, timed
from mlops.ml.spec import BASELINE_NAME


def _clone(repo: Path, target: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(repo), str(target)], check=True)
    return target


def _pretrained_md5(clone: Path) -> str:
    stage = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]["pretrain"]
    return stage["outs"][0]["md5"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-pretrain-") as scratch:
        cached = _clone(args.repo, Path(scratch) / "cached")
        committed_md5 = _pretrained_md5(cached)
        cached_pull = timed("dvc", "pull", "-q", "data.dvc", "pretrain", cwd=cached)
        cached_repro = timed("dvc", "repro", cwd=cached)
        metrics = json.loads((cached / "evaluate" / "metrics.json").read_text())

        fresh = _clone(args.repo, Path(scratch) / "fresh")
        fresh_pull = timed("dvc", "pull", "-q", "data.dvc", cwd=fresh)
        pretrain = timed("dvc", "repro", "pretrain", cwd=fresh)
        rest = timed("dvc", "repro", cwd=fresh)
        identical = _pretrained_md5(fresh) == committed_md5

    with_cache = cached_pull + cached_repro
    without_cache = fresh_pull + pretrain + rest
    baseline = metrics["baseline"]
    rows = [
        ("pretrain stage from scratch (`dvc repro pretrain`)", f"{pretrain:.0f} s", "<= 900 s"),
        ("fresh clone with the cache: dvc pull data + encoder, dvc repro", f"{with_cache:.0f} s", "<= 180 s"),
        ("fresh clone without it: dvc pull data, dvc repro (pretrains)", f"{without_cache:.0f} s", ""),
        ("without / with the cache", f"{without_cache / with_cache:.1f}x", ""),
        ("encoder pretrained from scratch = the pushed one (md5)", "yes" if identical else "no", "yes"),
        (
            "test accuracy, transformer / " + BASELINE_NAME,
            f"{metrics['accuracy']:.4f} / {baseline['accuracy']:.4f}",
            "",
        ),
        (
            "test macro-F1, transformer / " + BASELINE_NAME,
            f"{metrics['macro_f1']:.4f} / {baseline['macro_f1']:.4f}",
            "",
        ),
    ]
    print("| measure | value | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()
