"""The closed loop: `mlops canary watch` against a live server, Prometheus and Alertmanager, and alias moves
that survive a killed process.

No one calls analyze or reload here: the watch judges every few seconds, and the server follows the aliases
through its registry poll (serving.reload_seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import BIN, run, tiny_params, write_params
from mlops.registry import registry
from monitoring_stack import (
    FeedbackClient,
    alertmanager,
    fast_rules,
    mlops_serve,
    needs_prometheus,
    prometheus,
    set_fault,
    webhook_receiver,
)
from servers import free_port

WINDOW_SECONDS = 20
SECONDS_PER_MINUTE = 2  # the alert rules' minutes, in seconds
WATCH_PARAMS = {
    "serving": {"challenger_share": 0.5, "reload_seconds": 1},
    "canary": {
        "window": f"{WINDOW_SECONDS}s",
        "min_requests": 30,
        "min_feedback": 10,
        # The p99 of a few dozen requests is their slowest one; a shared machine's hiccup must not decide.
        "max_latency_p99_ratio": 5.0,
        "watch_interval_seconds": 2,
    },
}


def registry_with_champion_and_challenger(pipeline_project: Path, workdir: Path) -> tuple[MlflowClient, str, dict]:
    """Version 1 champion, version 2 challenger, both the pipeline's trained model."""
    shutil.copy(pipeline_project / "mlflow.db", workdir / "mlflow.db")
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    params = tiny_params(**WATCH_PARAMS)
    write_params(workdir, params)
    name = params["tracking"]["registered_model"]
    logged = json.loads((pipeline_project / "models" / "run.json").read_text())
    client = MlflowClient(store)
    for version in ("1", "2"):
        registry.register(client, name, logged["model_uri"], logged["run_id"], {}, f"version {version}", "the test")
    registry.promote(client, name, "1", "the test", "set-up")
    registry.start_canary(client, name, "2", "the test", "set-up")
    return client, name, logged


@contextlib.contextmanager
def canary_watch(workdir: Path, prometheus_url: str, store: str) -> Iterator[subprocess.Popen]:
    log = (workdir / "watch.log").open("w")
    command = [str(BIN / "mlops"), "canary", "watch", "--prometheus-url", prometheus_url]
    process = subprocess.Popen(
        command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_TRACKING_URI": store}
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def traffic_until(client: FeedbackClient, done, timeout: float, what: str, log: Path) -> None:
    """Predictions with confirming feedback, a few at a time, until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; the watch said:\n{log.read_text()[-3000:]}")
        client.predict_and_confirm(4)
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(900)
@needs_prometheus
def test_the_watch_promotes_a_good_challenger_and_rolls_back_a_failing_one_with_alerts(
    pipeline_project: Path, tmp_path: Path
) -> None:
    registry_client, name, logged = registry_with_champion_and_challenger(pipeline_project, tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with (
        webhook_receiver() as webhook,
        alertmanager(tmp_path, webhook.url) as alertmanager_address,
        mlops_serve(tmp_path, tmp_path / "params.yaml", env={"MLFLOW_TRACKING_URI": store}) as server,
        prometheus(
            tmp_path, server.removeprefix("http://"), fast_rules(SECONDS_PER_MINUTE), alertmanager_address
        ) as prometheus_url,
        canary_watch(tmp_path, prometheus_url, store) as watch,
    ):
        client = FeedbackClient(server)
        aliases = lambda: registry.aliases(registry_client, name)  # noqa: E731

        def settled(condition) -> bool:
            """``condition`` holds and no alias move is under way (its history is complete)."""
            model = registry.registered_model(registry_client, name)
            return registry.PENDING_TAG not in model.tags and condition()

        # A good challenger becomes champion with no one acting.
        promoted = lambda: settled(lambda: aliases().get("champion") == "2")  # noqa: E731
        traffic_until(client, promoted, 240, "the promotion", tmp_path / "watch.log")
        assert aliases() == {"dev": "2", "champion": "2", "previous-champion": "1"}
        by_watch = [move for move in registry.history(registry_client, name) if move.via == "mlops canary watch"]
        assert [(move.alias, move.before, move.after) for move in by_watch] == [
            ("champion", "1", "2"),
            ("previous-champion", None, "1"),
            ("challenger", "2", None),
        ]
        assert by_watch[0].why.startswith(f"canary promote over {WINDOW_SECONDS}s")

        # A challenger that fails half its requests is rolled back, and the alerts fire through Alertmanager.
        third = registry.register(registry_client, name, logged["model_uri"], logged["run_id"], {}, "v3", "the test")
        registry.start_canary(registry_client, name, str(third.version), "the test", "a faulty canary")
        set_fault(server, "challenger", error_rate=0.5)

        def rolled_back_and_paged() -> bool:
            return settled(lambda: "challenger" not in aliases()) and bool(
                webhook.received("MlopsCanaryErrorRateWorse", "firing", "/alerts/page")
            )

        traffic_until(client, rolled_back_and_paged, 300, "the roll back and the page", tmp_path / "watch.log")
        assert aliases() == {"dev": "3", "champion": "2", "previous-champion": "1"}
        assert registry_client.get_model_version(name, "3").tags[registry.ROLLED_BACK_TAG] == "true"
        last = registry.history(registry_client, name)[-1]
        assert (last.alias, last.before, last.after, last.via) == ("challenger", "3", None, "mlops canary watch")
        assert "worse on error rate" in last.why
        assert webhook.received("MlopsHighErrorRate", "firing", "/alerts/page")
        assert watch.poll() is None, "the watch keeps running"


def pending_move(database: Path) -> bool:
    """Whether the store holds a written-ahead alias move, read with sqlite alone (as fast as possible)."""
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as connection:
        found = connection.execute(
            "select 1 from registered_model_tags where key = ?", (registry.PENDING_TAG,)
        ).fetchone()
    return found is not None


@pytest.mark.slow
def test_a_process_killed_mid_promotion_leaves_aliases_that_the_next_command_completes(
    pipeline_project: Path, tmp_path: Path
) -> None:
    """`mlops promote` runs the same alias move as the watch's promote; it is killed the moment its move is
    written ahead, until one kill lands mid-move. The aliases are never half-moved after `mlops models`."""
    registry_client, name, _ = registry_with_champion_and_challenger(pipeline_project, tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    before = registry.aliases(registry_client, name)
    after = {"dev": "2", "champion": "2", "previous-champion": "1"}
    interrupted = 0
    for _attempt in range(8):
        process = subprocess.Popen([str(BIN / "mlops"), "promote"], cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
        while process.poll() is None and not pending_move(tmp_path / "mlflow.db"):
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
        process.wait()
        interrupted += pending_move(tmp_path / "mlflow.db")
        listing = run(["mlops", "models"], tmp_path, env={"MLFLOW_TRACKING_URI": store})
        assert not pending_move(tmp_path / "mlflow.db")
        assert registry.aliases(registry_client, name) in (before, after), listing.stdout
        if registry.aliases(registry_client, name) == after:
            if interrupted:
                break
            # Start over: champion 1, challenger 2 again.
            registry.rollback(registry_client, name, "the test", "again")
            registry.start_canary(registry_client, name, "2", "the test", "again")
            before = registry.aliases(registry_client, name)
    assert interrupted, "no kill landed inside an alias move: the recovery path was not exercised"
    finished = [move for move in registry.history(registry_client, name) if "interrupted" in move.why]
    assert finished and all(move.via == "mlops promote" for move in finished)


def test_the_watch_outlives_an_unreachable_prometheus_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    params = tiny_params(canary={"watch_interval_seconds": 0.5})
    write_params(tmp_path, params)
    name = params["tracking"]["registered_model"]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, str(tmp_path))
    registry.promote(client, name, "1", "the test", "set-up")
    registry.start_canary(client, name, "2", "the test", "set-up")
    before = registry.aliases(client, name)

    with canary_watch(tmp_path, f"http://127.0.0.1:{free_port()}", store) as watch:
        log = tmp_path / "watch.log"
        deadline = time.monotonic() + 120
        while log.read_text().count("this round failed, trying again in 0.5s: ") < 2:
            assert watch.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=30) == 0
    assert "Traceback" not in log.read_text() and "stopped" in log.read_text()
    assert registry.aliases(client, name) == before
