"""deploy/k8s, validated offline: both overlays render (tests/kustomize.py), every core resource passes
kubernetes-validate --strict for a pinned Kubernetes version, the custom resources pass their published schemas
(npm @kubernetes-models), checkov finds nothing unexplained, and the pieces agree with each other and with the
app: selectors, ports, probe paths, the alert rules and the canary analysis."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from kustomize import render

K8S = REPO_ROOT / "deploy" / "k8s"
OVERLAYS = ("staging", "production")
KUBERNETES_VERSION = "1.34.0"
TOOLS = REPO_ROOT / ".ci" / "tools"
K8S_VENV = TOOLS / "k8s-venv" / "bin"
SCHEMAS = TOOLS / "k8s-schemas"
CUSTOM_GROUPS = ("argoproj.io/", "monitoring.coreos.com/")


def _require(path: Path, what: str) -> None:
    if path.exists():
        return
    message = f"{what} is not installed ({path}): run `make system-deps`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict]:
    return render(K8S / "overlays" / request.param)


def _find(documents: list[dict], kind: str, name: str) -> dict:
    (found,) = [doc for doc in documents if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def test_every_core_resource_is_valid_for_the_pinned_kubernetes_version(rendered: list[dict], tmp_path: Path) -> None:
    _require(K8S_VENV / "kubernetes-validate", "kubernetes-validate")
    core = [doc for doc in rendered if not doc["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert {doc["kind"] for doc in core} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    files = []
    for index, doc in enumerate(core):
        files.append(tmp_path / f"{index}-{doc['kind']}.yaml")
        files[-1].write_text(yaml.safe_dump(doc))
    result = subprocess.run(
        [K8S_VENV / "kubernetes-validate", "--strict", "--quiet", "-k", KUBERNETES_VERSION, *files],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_custom_resource_matches_its_published_schema(rendered: list[dict]) -> None:
    _require(SCHEMAS / "node_modules" / "@kubernetes-models", "the @kubernetes-models schemas")
    custom = [doc for doc in rendered if doc["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert {doc["kind"] for doc in custom} == {"Rollout", "AnalysisTemplate", "ServiceMonitor", "PrometheusRule"}
    result = subprocess.run(
        ["node", Path(__file__).with_name("k8s_custom_resources.mjs"), SCHEMAS],
        input=json.dumps(custom),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_custom_resource_check_rejects_a_wrong_field() -> None:
    _require(SCHEMAS / "node_modules" / "@kubernetes-models", "the @kubernetes-models schemas")
    broken = [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "x"},
            "spec": {"replicas": "two"},
        }
    ]
    result = subprocess.run(
        ["node", Path(__file__).with_name("k8s_custom_resources.mjs"), SCHEMAS],
        input=json.dumps(broken),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Rollout/x: data/spec/replicas must be integer" in result.stdout


def test_checkov_finds_nothing_that_is_not_explained(rendered: list[dict], tmp_path: Path) -> None:
    _require(K8S_VENV / "checkov", "checkov")
    (tmp_path / "all.yaml").write_text(yaml.safe_dump_all(rendered))
    result = subprocess.run(
        [K8S_VENV / "checkov", "--directory", tmp_path, "--framework", "kubernetes", "--output", "json", "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
    )
    report = json.loads(result.stdout or "{}")
    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report.get("results", {}).get("failed_checks", [])
    ]
    assert not failed, "\n".join(failed)


def test_selectors_ports_and_workload_references_agree(rendered: list[dict]) -> None:
    deployment = _find(rendered, "Deployment", "model-server")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget", "Rollout"):
        resource = _find(rendered, kind, "model-server")
        selector = resource["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod_labels.items(), kind
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    rollout = _find(rendered, "Rollout", "model-server")
    assert rollout["spec"]["workloadRef"] == {
        **rollout["spec"]["workloadRef"],
        "kind": "Deployment",
        "name": "model-server",
    }
    assert _find(rendered, "HorizontalPodAutoscaler", "model-server")["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    template = rollout["spec"]["strategy"]["canary"]["analysis"]["templates"][0]["templateName"]
    analysis = _find(rendered, "AnalysisTemplate", template)
    declared = {arg["name"] for arg in analysis["spec"]["args"]}
    passed = {arg["name"] for arg in rollout["spec"]["strategy"]["canary"]["analysis"]["args"]}
    assert passed <= declared and {arg["name"] for arg in analysis["spec"]["args"] if "value" not in arg} <= passed

    service = _find(rendered, "Service", "model-server")
    monitor = _find(rendered, "ServiceMonitor", "model-server")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} <= {
        port["name"] for port in service["spec"]["ports"]
    }


def test_probes_and_ports_match_the_app_and_the_image(rendered: list[dict]) -> None:
    container = _find(rendered, "Deployment", "model-server")["spec"]["template"]["spec"]["containers"][0]
    port = container["ports"][0]
    served_paths = set(
        re.findall(
            r'\.(?:get|post)\("(/[a-z/]*)"',
            "".join(path.read_text() for path in (REPO_ROOT / "src" / "mlops" / "serving").glob("*.py")),
        )
    )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
        assert container[probe]["httpGet"]["path"] in served_paths
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {port['containerPort']}" in dockerfile
    assert container["args"][-2:] == ["--port", str(port["containerPort"])]
    monitor = _find(rendered, "ServiceMonitor", "model-server")
    assert monitor["spec"]["endpoints"][0]["path"] in served_paths


def test_overlays_set_their_namespace_and_image_tag() -> None:
    for overlay in OVERLAYS:
        documents = render(K8S / "overlays" / overlay)
        namespace = _find(documents, "Namespace", f"mlops-{overlay}")["metadata"]["name"]
        assert all(doc["metadata"].get("namespace") == namespace for doc in documents if doc["kind"] != "Namespace")
        image = _find(documents, "Deployment", "model-server")["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.rsplit(":", 1)[1] == {"staging": "main", "production": "0.1.0"}[overlay]
    assert _find(render(K8S / "overlays" / "production"), "Rollout", "model-server")["spec"]["replicas"] == 3


def test_the_prometheus_rule_carries_exactly_the_alert_rules(rendered: list[dict]) -> None:
    rule = _find(rendered, "PrometheusRule", "mlops-serving")
    assert rule["spec"] == yaml.safe_load((REPO_ROOT / "monitoring" / "rules" / "alerts.yml").read_text())
    # The alert rules select job="mlops": the ServiceMonitor must give the scraped series that job.
    relabel = _find(rendered, "ServiceMonitor", "model-server")["spec"]["endpoints"][0]["relabelings"]
    assert {"action": "replace", "targetLabel": "job", "replacement": "mlops"} in relabel


def test_committed_generated_manifests_equal_what_the_generator_writes_now() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, json; g = runpy.run_path('deploy/k8s/generate.py');"
            "print(json.dumps({str(path): text for path, text in g['render']().items()}))",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for path, text in json.loads(result.stdout).items():
        assert Path(path).read_text() == text, f"{path} is stale: run `python deploy/k8s/generate.py`"


def test_canary_analysis_uses_the_canary_commands_promql_and_thresholds(rendered: list[dict]) -> None:
    from mlops.config import load_params
    from mlops.serving.canary import queries

    canary = load_params(REPO_ROOT / "params.yaml").canary
    analysis = _find(rendered, "AnalysisTemplate", "model-server-canary")
    metrics = {metric["name"]: metric for metric in analysis["spec"]["metrics"]}
    new = queries(canary.window, by="", matchers='rollouts_pod_template_hash="{{args.canary-hash}}"')
    stable = queries(canary.window, by="", matchers='rollouts_pod_template_hash="{{args.stable-hash}}"')
    assert metrics["requests"]["provider"]["prometheus"]["query"] == new["requests"]
    assert metrics["requests"]["successCondition"] == f"result[0] >= {canary.min_requests}"
    error_query = metrics["error-rate-increase"]["provider"]["prometheus"]["query"]
    assert all(new[key] in error_query and stable[key] in error_query for key in ("errors", "requests"))
    assert metrics["error-rate-increase"]["failureCondition"] == f"result[0] > {canary.max_error_rate_increase}"
    latency_query = metrics["latency-p99-ratio"]["provider"]["prometheus"]["query"]
    assert new["latency_p99_s"] in latency_query and stable["latency_p99_s"] in latency_query
    assert metrics["latency-p99-ratio"]["failureCondition"] == f"result[0] > {canary.max_latency_p99_ratio}"
    assert metrics["online-accuracy-drop"]["failureCondition"] == f"result[0] > {canary.max_accuracy_drop}"


def test_every_analysis_query_is_valid_promql(rendered: list[dict], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    _require(Path(promtool or "/usr/bin/promtool"), "promtool (Debian prometheus)")
    analysis = _find(rendered, "AnalysisTemplate", "model-server-canary")
    rules = [
        {
            "record": f"check:{metric['name'].replace('-', '_')}",
            "expr": metric["provider"]["prometheus"]["query"]
            .replace("{{args.canary-hash}}", "a")
            .replace("{{args.stable-hash}}", "b"),
        }
        for metric in analysis["spec"]["metrics"]
    ]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "analysis", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", tmp_path / "rules.yml"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
