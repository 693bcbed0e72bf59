"""The alerts for real: `mlops serve` with injected faults, scraped by Prometheus running the shipped
rules, alerting through Alertmanager with the shipped routing, to a local webhook.

The shipped rules think in minutes; here every minute is 2 seconds (monitoring_stack.fast_rules),
so an alert that fires after 5 minutes of trouble in production fires after 10 seconds here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_params, write_params
from monitoring_stack import (
    alertmanager,
    fast_rules,
    firing,
    mlops_serve,
    needs_prometheus,
    prometheus,
    set_fault,
    traffic,
    wait_for,
    webhook_receiver,
)

pytestmark = [needs_prometheus, pytest.mark.slow, pytest.mark.heavy, pytest.mark.timeout(300)]

SECONDS_PER_MINUTE = 2
DEADLINE = 60  # seconds for an alert to fire, or to resolve, once the fault is set or cleared


def test_injected_errors_and_latency_fire_alerts_that_reach_the_webhook_and_resolve(
    pipeline_project: Path, tmp_path: Path
) -> None:
    model = str(pipeline_project / "models" / "model")
    write_params(tmp_path, tiny_params(serving={"challenger_share": 0.5}))
    with (
        webhook_receiver() as webhook,
        alertmanager(tmp_path, webhook.url) as alertmanager_address,
        mlops_serve(tmp_path, tmp_path / "params.yaml", "--champion", model, "--challenger", model) as server,
        prometheus(
            tmp_path, server.removeprefix("http://"), fast_rules(SECONDS_PER_MINUTE), alertmanager_address
        ) as prometheus_url,
        traffic(server),
    ):
        set_fault(server, "challenger", error_rate=0.5)
        set_fault(server, "champion", delay_ms=600)

        errors = wait_for(lambda: firing(prometheus_url, "MlopsHighErrorRate"), DEADLINE, "MlopsHighErrorRate")
        assert {alert["labels"]["variant"] for alert in errors} == {"challenger"}
        slow = wait_for(lambda: firing(prometheus_url, "MlopsHighLatencyP99"), DEADLINE, "MlopsHighLatencyP99")
        assert {alert["labels"]["variant"] for alert in slow} == {"champion"}
        wait_for(lambda: firing(prometheus_url, "MlopsCanaryErrorRateWorse"), DEADLINE, "MlopsCanaryErrorRateWorse")

        # Routed by severity: errors page, latency opens a ticket.
        wait_for(lambda: webhook.received("MlopsHighErrorRate", "firing", "/alerts/page"), DEADLINE, "the page")
        wait_for(lambda: webhook.received("MlopsHighLatencyP99", "firing", "/alerts/ticket"), DEADLINE, "the ticket")
        wait_for(
            lambda: webhook.received("MlopsCanaryErrorRateWorse", "firing", "/alerts/page"), DEADLINE, "canary page"
        )

        set_fault(server, "challenger")
        set_fault(server, "champion")

        wait_for(
            lambda: webhook.received("MlopsHighErrorRate", "resolved", "/alerts/page"), DEADLINE, "errors resolved"
        )
        wait_for(
            lambda: webhook.received("MlopsHighLatencyP99", "resolved", "/alerts/ticket"), DEADLINE, "latency resolved"
        )
        assert not firing(prometheus_url, "MlopsHighErrorRate")
        assert not firing(prometheus_url, "MlopsHighLatencyP99")
