"""monitoring/: the shipped configs pass Prometheus's and Alertmanager's own checkers, every alert has
promtool tests that see it fire and stay quiet, and every dashboard query parses in a real Prometheus."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import run
from monitoring_stack import MONITORING, RULES, needs_prometheus, prometheus, query

pytestmark = [needs_prometheus, pytest.mark.needs("promtool", "amtool")]

DASHBOARD = MONITORING / "grafana" / "dashboards" / "mlops.json"
# The metric contract with `mlops serve` (src/mlops/serving/metrics.py); histograms add _bucket, _sum, _count.
CONTRACT = {
    "mlops_requests_total",
    "mlops_request_latency_seconds",
    "mlops_predictions_total",
    "mlops_feedback_total",
    "mlops_online_accuracy",
    "mlops_batch_size",
    "mlops_input_chars",
    "mlops_model_info",
    "mlops_model_load_failures_total",
    "mlops_training_label_share",
}
HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def metric_names(promql: str) -> set[str]:
    return {HISTOGRAM_SUFFIX.sub("", name) for name in re.findall(r"\bmlops_[a-z_]+", promql)} - {"mlops"}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_prometheus_config_passes_promtool() -> None:
    result = run(["promtool", "check", "config", "prometheus.yml"], MONITORING)
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_and_stays_quiet_in_promtool_tests() -> None:
    """Each alert needs a case expecting it and a case expecting silence, and `promtool test rules` passes."""
    test_files = sorted((MONITORING / "tests").glob("*.yml"))
    cases = [case for path in test_files for case in yaml.safe_load(path.read_text())["tests"]]
    checked = [check for case in cases for check in case["alert_rule_test"]]
    for rule in alert_rules():
        expected = [check["exp_alerts"] for check in checked if check["alertname"] == rule["alert"]]
        assert any(expected), f"no promtool test sees {rule['alert']} fire"
        assert not all(expected), f"no promtool test sees {rule['alert']} stay quiet"
    result = run(["promtool", "test", "rules", *map(str, test_files)], MONITORING)
    assert "SUCCESS" in result.stdout


# A number an expression compares against (`> 0.05`, `>= 20`), the only thing a threshold mutation touches.
THRESHOLD = re.compile(r"(?<=[<>]=\s)[0-9.]+|(?<=[<>]\s)[0-9.]+")


def threshold_mutants() -> list:
    """(alert, rules file) with one threshold or `for:` moved 50% up or a third down, as pytest params named by it."""
    mutants = []
    for index, rule in enumerate(alert_rules()):
        edits = [("expr", match, float(match[0])) for match in THRESHOLD.finditer(rule["expr"])]
        if "for" in rule:
            edits.append(("for", re.fullmatch(r"(\d+)m", rule["for"]), float(rule["for"][:-1])))
        for field, match, value in edits:
            if value == 0:
                continue  # "> 0" means "any at all": no nearby value to move it to
            for factor in (1.5, 1 / 1.5):
                moved = value * factor
                new = (
                    f"{round(moved)}m"
                    if field == "for"
                    else (f"{round(moved)}" if value.is_integer() else f"{moved:g}")
                )
                text = rule[field]
                mutated_rule = {**rule, field: text[: match.start(0)] + new + text[match.end(0) :]}
                groups = yaml.safe_load(RULES.read_text())
                flat = [r for group in groups["groups"] for r in group["rules"]]
                flat[index].update(mutated_rule)
                change = f"{field} {match[0]} -> {new}"
                mutants.append(
                    pytest.param(
                        rule["alert"], yaml.safe_dump(groups, sort_keys=False), id=f"{rule['alert']}: {change}"
                    )
                )
    return mutants


@pytest.mark.parametrize(("alert", "rules"), threshold_mutants())
def test_promtool_tests_fail_when_a_threshold_or_duration_moves(alert: str, rules: str, tmp_path: Path) -> None:
    """The promtool tests feed values just above and just below every threshold, so moving any one of them
    (the error-rate page from 5% to 7.5% or 3.3%, a traffic floor, a `for:`) fails them."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "alerts.yml").write_text(rules)
    shutil.copytree(MONITORING / "tests", tmp_path / "tests")
    result = run(["promtool", "test", "rules", "tests/alerts_test.yml"], tmp_path, check=False)
    assert result.returncode == 1, "the promtool tests still pass with this change"
    assert f"alertname: {alert}," in result.stdout + result.stderr, "promtool failed, but not on the changed alert"


def test_alerts_route_by_a_known_severity_and_explain_themselves() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
        assert metric_names(rule["expr"]) <= CONTRACT, rule["alert"]


def test_alertmanager_config_and_its_commented_examples_pass_amtool(tmp_path: Path) -> None:
    """The shipped file, and the same file with the PagerDuty and Slack examples uncommented, are valid."""
    result = run(["amtool", "check-config", "alertmanager.yml"], MONITORING)
    assert "SUCCESS" in result.stdout
    shipped = (MONITORING / "alertmanager.yml").read_text()
    receivers = shipped.index("receivers:")
    examples = re.sub(r"(?m)^(\s*)# ", r"\1", shipped[receivers : shipped.index("\n# ", receivers)])
    uncommented = tmp_path / "alertmanager.yml"
    uncommented.write_text(shipped[:receivers] + examples + shipped[shipped.index("\n# ", receivers) :])
    config = yaml.safe_load(uncommented.read_text())
    by_name = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert "pagerduty_configs" in by_name["page"] and "slack_configs" in by_name["ticket"]
    run(["amtool", "check-config", str(uncommented)], tmp_path)


def test_alertmanager_routes_pages_and_tickets_to_their_receivers() -> None:
    """amtool's own routing for the severities the rules use (the e2e test sees the webhooks get them)."""
    for labels, receiver in [("severity=page", "page"), ("severity=ticket", "ticket"), ("severity=info", "default")]:
        result = run(["amtool", "config", "routes", "test", "--config.file=alertmanager.yml", labels], MONITORING)
        assert result.stdout.strip() == receiver, labels


@pytest.fixture(scope="module")
def empty_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prometheus with nothing to scrape: enough to parse queries."""
    with prometheus(tmp_path_factory.mktemp("prometheus"), target=None) as url:
        yield url


def dashboard_queries() -> list[tuple[str, str]]:
    """The PromQL of every Prometheus panel (the request-log panel queries Loki)."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["datasource"]["type"] == "prometheus"
        for target in panel["targets"]
    ]


def test_every_dashboard_query_parses_in_prometheus(empty_prometheus: str) -> None:
    for title, expr in dashboard_queries():
        query(empty_prometheus, expr.replace("$__rate_interval", "1m"))  # Grafana's variable, as Grafana expands it
        assert metric_names(expr) <= CONTRACT, title


def test_dashboard_shows_every_contract_metric_from_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used = set().union(*(metric_names(expr) for _, expr in dashboard_queries()))
    assert used == CONTRACT
    provisioned = {
        source["uid"]: source["type"]
        for path in (MONITORING / "grafana/provisioning/datasources").glob("*.yml")
        for source in yaml.safe_load(path.read_text())["datasources"]
    }
    assert {panel["datasource"]["uid"]: panel["datasource"]["type"] for panel in dashboard["panels"]} == provisioned
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_config_check_catches_a_broken_rule(tmp_path: Path) -> None:
    """The checks above would notice a mistake: a rule file with a typo fails promtool."""
    shutil.copy(MONITORING / "prometheus.yml", tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "alerts.yml").write_text(RULES.read_text().replace("sum by (variant)", "sum by variant", 1))
    result = run(["promtool", "check", "config", "prometheus.yml"], tmp_path, check=False)
    assert result.returncode == 1
    assert '"MlopsHighErrorRate": could not parse expression' in result.stdout + result.stderr
