"""`mlops canary analyze`: the verdict rules on their own, then for real: a registry with a champion and a
challenger, `mlops serve` serving both from it, Prometheus scraping it, and the command judging what it saw."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from conftest import BIN, run, tiny_params, write_params
from mlops.config import CanaryParams
from mlops.registry import registry
from mlops.serving import canary
from mlops.serving.canary import Decision, VariantStats
from monitoring_stack import FeedbackClient, mlops_serve, needs_prometheus, prometheus, query, set_fault, wait_for
from servers import free_port

PARAMS = CanaryParams(
    window="10m",
    min_requests=200,
    max_error_rate_increase=0.01,
    max_latency_p99_ratio=1.5,
    max_accuracy_drop=0.02,
    min_feedback=50,
)


def stats(**changes: object) -> VariantStats:
    healthy = {
        "requests": 1000.0,
        "errors": 2.0,
        "latency_p99_s": 0.02,
        "feedback": 100.0,
        "correct": 90.0,
        "versions": ("1",),
    }
    return VariantStats(**{**healthy, **changes})


def decide(challenger: VariantStats, champion: VariantStats | None = None, params: CanaryParams = PARAMS):
    return canary.decide({"champion": champion or stats(), "challenger": challenger}, params)


def test_a_challenger_as_good_as_the_champion_is_promoted() -> None:
    analysis = decide(stats(versions=("2",), errors=10.0, latency_p99_s=0.029, correct=89.0))
    assert analysis.decision is Decision.PROMOTE
    assert analysis.challenger_version == "2"
    assert all(check.passed for check in analysis.checks)


@pytest.mark.parametrize(
    ("challenger", "worse_on"),
    [
        (stats(errors=13.0), "error rate"),  # 1.3% against 0.2%: 1.1 points more
        (stats(latency_p99_s=0.031), "p99 latency"),  # 1.55 times the champion's
        (stats(correct=87.0), "online accuracy"),  # 3 points below
    ],
)
def test_a_challenger_worse_on_one_check_is_rolled_back(challenger: VariantStats, worse_on: str) -> None:
    analysis = decide(challenger)
    assert analysis.decision is Decision.ROLL_BACK
    assert analysis.reason == f"the challenger is worse on {worse_on}"
    assert [check.name for check in analysis.checks if check.passed is False] == [worse_on]


def test_too_little_traffic_holds_even_when_the_challenger_fails_everything() -> None:
    analysis = decide(stats(requests=199.0, errors=199.0))
    assert analysis.decision is Decision.HOLD
    assert "fewer than 200 requests" in analysis.reason


def test_too_little_feedback_holds_a_healthy_challenger_but_not_a_failing_one() -> None:
    assert decide(stats(feedback=49.0, correct=44.0)).decision is Decision.HOLD
    assert decide(stats(feedback=49.0, correct=44.0, errors=500.0)).decision is Decision.ROLL_BACK
    without_feedback = PARAMS.model_copy(update={"min_feedback": 0})
    no_labels = stats(feedback=0.0, correct=0.0)
    assert decide(no_labels, no_labels, without_feedback).decision is Decision.PROMOTE


def test_a_version_change_within_the_window_holds() -> None:
    analysis = decide(stats(versions=("2", "3")))
    assert analysis.decision is Decision.HOLD
    assert analysis.challenger_version is None


def test_no_challenger_at_all_holds() -> None:
    assert decide(VariantStats()).decision is Decision.HOLD


def test_the_table_shows_both_variants_numbers_and_limits() -> None:
    table = canary.format_table(decide(stats(errors=50.0)))
    lines = table.splitlines()
    assert lines[0] == "canary verdict over 10m: ROLL BACK (the challenger is worse on error rate)"
    assert lines[1].split() == ["check", "champion", "challenger", "limit", "result"]
    error_row = next(line for line in lines if line.startswith("error rate"))
    assert "0.20%" in error_row and "5.00%" in error_row and error_row.endswith("FAIL")


def test_window_override_is_validated() -> None:
    assert canary.with_window(PARAMS, "90s").window == "90s"
    with pytest.raises(canary.CanaryError, match="--window '10 minutes' is not a duration"):
        canary.with_window(PARAMS, "10 minutes")


def test_apply_refuses_when_the_registry_challenger_is_not_the_version_served(tmp_path: Path) -> None:
    """The alias moved after the window was served: judging one version and moving another would be wrong."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'registry.db'}")
    client.create_registered_model("model")
    for _ in range(3):
        client.create_model_version("model", str(tmp_path))
    client.set_registered_model_alias("model", registry.CHAMPION, "1")
    client.set_registered_model_alias("model", registry.CHALLENGER, "3")
    analysis = decide(stats(versions=("2",)))
    with pytest.raises(canary.CanaryError, match="challenger for 'model' is version 3 but the server served version 2"):
        canary.apply(analysis, client, "model", "the test")
    assert registry.aliases(client, "model") == {"champion": "1", "challenger": "3"}


def test_unreachable_or_wrong_prometheus_is_one_line_and_exit_1(tmp_path: Path) -> None:
    write_params(tmp_path, tiny_params())
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = run([str(BIN / "mlops"), "canary", "analyze", "--prometheus-url", unreachable], tmp_path, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot reach Prometheus at {unreachable}")
    assert "Traceback" not in result.stderr


@needs_prometheus
def test_prometheus_rejecting_a_query_or_not_being_prometheus_is_a_canary_error(tmp_path: Path) -> None:
    with prometheus(tmp_path, target=None) as url, httpx.Client() as client:
        with pytest.raises(canary.CanaryError, match=r"rejected 'sum by \(\(': .*parse error"):
            canary.instant_query(client, url, "sum by ((")
        with pytest.raises(canary.CanaryError, match="did not answer like Prometheus"):
            canary.instant_query(client, f"{url}/graph", "up")
        assert canary.collect(url, "1m") == {"champion": VariantStats(), "challenger": VariantStats()}


# The live test: real registry, real server, real Prometheus.
WINDOW_SECONDS = 30  # generous: each `mlops canary analyze` spends seconds importing before it queries
LIVE_PARAMS = {
    "serving": {"challenger_share": 0.5, "reload_seconds": 3600},  # the test reloads explicitly
    "canary": {
        "window": f"{WINDOW_SECONDS}s",
        "min_requests": 30,
        "min_feedback": 10,
        # The p99 of a few dozen requests is their slowest one: on a machine shared with other
        # jobs one scheduler hiccup doubles it, so this test allows more than a real canary would.
        "max_latency_p99_ratio": 5.0,
    },
}


def scraped_all(prometheus_url: str, client: FeedbackClient) -> bool:
    """Prometheus has scraped every request sent so far."""
    result = query(prometheus_url, "sum(mlops_requests_total)")
    return bool(result) and float(result[0]["value"][1]) >= client.sent


def analyze(project: Path, prometheus_url: str, store: str, *options: str):
    command = [str(BIN / "mlops"), "canary", "analyze", "--prometheus-url", prometheus_url, *options]
    return run(command, project, check=False, env={"MLFLOW_TRACKING_URI": store})


@pytest.mark.slow
@pytest.mark.heavy
@pytest.mark.timeout(600)
@needs_prometheus
def test_hold_then_roll_back_then_promote_against_a_live_server(pipeline_project: Path, tmp_path: Path) -> None:
    shutil.copy(pipeline_project / "mlflow.db", tmp_path / "mlflow.db")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = tiny_params(**LIVE_PARAMS)
    write_params(tmp_path, params)
    name = params["tracking"]["registered_model"]
    logged = json.loads((pipeline_project / "models" / "run.json").read_text())
    registry_client = MlflowClient(store)
    for description in ("the champion", "the challenger"):
        version = registry.register(
            registry_client, name, logged["model_uri"], logged["run_id"], {}, description, "the test"
        )
        if description == "the champion":
            registry.promote(registry_client, name, version.version, "the test", "set-up")
        else:
            registry.start_canary(registry_client, name, version.version, "the test", "set-up")
    assert registry.aliases(registry_client, name) == {"champion": "1", "challenger": "2", "dev": "2"}

    serve_env = {"MLFLOW_TRACKING_URI": store}
    with (
        mlops_serve(tmp_path, tmp_path / "params.yaml", env=serve_env) as server,
        prometheus(tmp_path, server.removeprefix("http://")) as prometheus_url,
    ):
        client = FeedbackClient(server)

        # Hold: a handful of requests is no evidence; --apply leaves the registry alone.
        client.predict_and_confirm(6)
        wait_for(lambda: scraped_all(prometheus_url, client), 30, "Prometheus to scrape the first requests")
        held = analyze(tmp_path, prometheus_url, store, "--apply")
        assert held.returncode == 0, held.stdout + held.stderr
        assert held.stdout.startswith(f"canary verdict over {WINDOW_SECONDS}s: HOLD (fewer than 30 requests")
        assert "hold: the registry is unchanged" in held.stdout
        assert registry.aliases(registry_client, name) == {"champion": "1", "challenger": "2", "dev": "2"}

        # Roll back: the challenger fails most requests; --apply removes its alias, exit 3.
        set_fault(server, "challenger", error_rate=0.6)
        client.predict_and_confirm(100)
        wait_for(lambda: scraped_all(prometheus_url, client), 30, "Prometheus to scrape the failing requests")
        rolled_back = analyze(tmp_path, prometheus_url, store, "--apply")
        assert rolled_back.returncode == canary.ROLL_BACK_EXIT_CODE, rolled_back.stdout + rolled_back.stderr
        assert "ROLL BACK (the challenger is worse on error rate)" in rolled_back.stdout
        assert "removed the challenger alias from version 2" in rolled_back.stdout
        assert registry.aliases(registry_client, name) == {"champion": "1", "dev": "2"}

        # Promote: the challenger is fixed and put back; once the failures have left the window,
        # healthy traffic with feedback promotes it.
        set_fault(server, "challenger")
        registry_client.set_registered_model_alias(name, registry.CHALLENGER, "2")
        httpx.post(f"{server}/admin/reload", timeout=60).raise_for_status()
        errors_left_window = time.monotonic() + WINDOW_SECONDS + 2
        while time.monotonic() < errors_left_window:
            client.predict_and_confirm(5)
            time.sleep(0.1)
        wait_for(lambda: scraped_all(prometheus_url, client), 30, "Prometheus to scrape the healthy requests")
        promoted = analyze(tmp_path, prometheus_url, store, "--apply", "--window", f"{WINDOW_SECONDS - 2}s")
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        assert f"canary verdict over {WINDOW_SECONDS - 2}s: PROMOTE" in promoted.stdout
        assert "promoted version 2" in promoted.stdout
        assert registry.aliases(registry_client, name) == {"champion": "2", "previous-champion": "1", "dev": "2"}
