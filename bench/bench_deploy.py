"""How long `mlops deploy` (gate, register, promote) takes on sqlite for the default model.

Works in a throwaway copy of the repository with the default params.yaml. Training does not change what
deploy costs (the model's size and the test split do), so the default architecture is built untrained
and the gate lets any untrained model through (minimums -1, no maximums, any regression allowed). Timed: the
first deploy (no champion: absolute thresholds); one against a champion on unchanged data (its scores on this test split
are stored with the version, so it is not re-scored); one against a champion without scores for this split
(as after a data, split or metric-code change: loaded from the registry and re-scored on the full test split);
and the same commit again (no-op).
The peer, measured in the same run, is `mlops evaluate`. Target: deploy against an unchanged-data champion
at most 10 s.

    python bench/bench_deploy.py
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import yaml

from common import BIN, REPO_ROOT, copy_repository, sh, timed

TARGET_SECONDS = 10.0


def prepare_project(target: Path) -> None:
    copy_repository(target)
    shutil.copytree(REPO_ROOT / "data", target / "data")
    params = yaml.safe_load((target / "params.yaml").read_text())
    # Floors no score can break (accuracy over the majority-class rate is negative for an untrained model).
    params["gate"]["minimum"] = {metric: -1.0 for metric in params["gate"]["minimum"]}
    params["gate"]["max_regression"] = {metric: 1.0 for metric in params["gate"]["max_regression"]}
    # Latency on a busy shared machine must not refuse the model whose deploy is being timed.
    params["gate"]["maximum"] = {metric: 1e9 for metric in params["gate"]["maximum"]}
    params["train"]["progress_bar"] = False
    params["evaluate"]["fail_without_skill"] = False  # the timed model is untrained, so it has no skill
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "init", "-q", "-b", "main", cwd=target)
    sh("git", "add", "-A", cwd=target)
    sh("git", "commit", "-q", "-m", "bench", cwd=target)


LOG_UNTRAINED_MODEL = """
import json
from pathlib import Path
from mlops import paths, tracking
from mlops.config import load_params
from mlops.ml.data import load_splits
from mlops.ml.model import LABEL_SHARE_FILE, build

params = load_params()
splits = load_splits(params.data)
tokenizer, model = build(params.model, params.data.labels, splits.train["text"].tolist())
paths.MODEL_DIR.mkdir(parents=True, exist_ok=True)
tokenizer.save_pretrained(paths.MODEL_DIR)
model.save_pretrained(paths.MODEL_DIR)
shares = {label: 1 / len(params.data.labels) for label in params.data.labels}
(paths.MODEL_DIR / LABEL_SHARE_FILE).write_text(json.dumps(shares))
history = [{"epoch": 1, "train_loss": 0.7, "validation_loss": 0.7}]
paths.HISTORY_FILE.write_text(json.dumps(history))
run = tracking.log_training(params, history, paths.MODEL_DIR, ["a fine film"])
paths.RUN_FILE.write_text(json.dumps(run.to_json()))
"""


def new_candidate(project: Path) -> float:
    """A newly logged run of the default-size model on a new commit; returns how long `mlops evaluate` took."""
    sh(str(BIN / "python"), "-c", LOG_UNTRAINED_MODEL, cwd=project)
    seconds = timed("mlops", "evaluate", cwd=project)
    sh("git", "commit", "-q", "--allow-empty", "-m", "candidate", cwd=project)
    return seconds


FORGET_CHAMPION_SCORES = """
from mlflow import MlflowClient
from mlops.config import load_params
from mlops.registry.champion import SCORES_TAG_PREFIX

name = load_params().tracking.registered_model
client = MlflowClient("sqlite:///mlflow.db")
champion = client.get_model_version_by_alias(name, "champion")
for tag in champion.tags:
    if tag.startswith(SCORES_TAG_PREFIX):
        client.delete_model_version_tag(name, champion.version, tag)
"""


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as folder:
        project = Path(folder)
        prepare_project(project)
        evaluate_first = new_candidate(project)
        first = timed("mlops", "deploy", cwd=project)
        evaluate_second = new_candidate(project)
        stored = timed("mlops", "deploy", cwd=project)
        new_candidate(project)
        sh(str(BIN / "python"), "-c", FORGET_CHAMPION_SCORES, cwd=project)
        rescored = timed("mlops", "deploy", cwd=project)
        again = timed("mlops", "deploy", cwd=project)
        test_rows = json.loads((project / "evaluate" / "metrics.json").read_text())["samples"]["test"]["rows"]

    evaluate_seconds = (evaluate_first + evaluate_second) / 2
    rows = [
        ("mlops evaluate (peer)", evaluate_seconds),
        ("mlops deploy, first model (no champion)", first),
        ("mlops deploy, against a champion, unchanged data", stored),
        ("mlops deploy, against a champion, split changed (re-scores)", rescored),
        ("mlops deploy, same commit again (no-op)", again),
    ]
    print(f"default model, sqlite registry, test split {test_rows} rows; target: deploy <= {TARGET_SECONDS:.0f} s")
    print(f"{'step':<60} {'seconds':>8} {'x evaluate':>11}")
    for label, seconds in rows:
        print(f"{label:<60} {seconds:>8.2f} {seconds / evaluate_seconds:>11.2f}")
    verdict = "within" if stored <= TARGET_SECONDS else "OVER"
    print(f"deploy against an unchanged-data champion {stored:.2f} s: {verdict} the target")


if __name__ == "__main__":
    main()
