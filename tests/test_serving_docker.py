"""The Dockerfile and docker-compose.yml, checked without building (tests/test_images.py builds and runs the
images): everything they refer to exists and agrees with the code, promtool passes the compose Prometheus
config, nginx the load balancer's, and the log shipping (Alloy, Loki, Grafana) fits together."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO_ROOT
from needs import need

DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def instructions(name: str) -> list[str]:
    joined = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [name]]


def compose_content(config: str) -> str:
    """An inline compose config as the container sees it ($$ is compose's escape for $)."""
    return COMPOSE["configs"][config]["content"].replace("$$", "$")


def test_the_image_runs_mlops_serve_as_a_non_root_user_with_a_healthcheck() -> None:
    assert instructions("FROM") == ["${BASE_IMAGE}"]
    assert "ARG BASE_IMAGE=python:3.11-slim" in DOCKERFILE
    assert instructions("USER") == ["mlops"]
    [cmd] = instructions("CMD")
    assert json.loads(cmd) == ["sh", "-c", 'exec mlops serve --host 0.0.0.0 --port "$PORT"']
    [port] = instructions("EXPOSE")
    assert f"ENV PORT={port}" in DOCKERFILE
    [healthcheck] = instructions("HEALTHCHECK")
    assert "http://127.0.0.1:{os.environ['PORT']}/healthz" in healthcheck
    torch = re.search(r"^torch==(\S+)", (REPO_ROOT / "requirements.in").read_text(), re.MULTILINE)[1]
    assert f"ARG TORCH_VERSION={torch}" in DOCKERFILE
    assert "download.pytorch.org/whl/cpu" in DOCKERFILE


def test_everything_the_image_copies_exists_and_passes_the_dockerignore() -> None:
    patterns = [line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!").rstrip("/")):
                verdict = not negated
        return verdict

    sources = [part for line in instructions("COPY") for part in line.split()[:-1]]
    assert sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
        assert not ignored(source.rstrip("/")), f"{source} is excluded by .dockerignore"
    assert ignored("models") and ignored("mlflow.db") and ignored(".git")


def test_compose_runs_two_server_replicas_on_the_registry_behind_the_load_balancer() -> None:
    server = SERVICES["model-server"]
    assert server["build"] == "." and server["deploy"]["replicas"] == 2
    mlflow_port = SERVICES["mlflow"]["command"][SERVICES["mlflow"]["command"].index("--port") + 1]
    assert server["environment"]["MLFLOW_TRACKING_URI"] == f"http://mlflow:{mlflow_port}"
    [port] = instructions("EXPOSE")
    assert server["expose"] == [port]
    balancer = compose_content("load-balancer")
    assert f"server model-server:{port};" in balancer
    assert "hash $balance_key consistent;" in balancer
    assert SERVICES["load-balancer"]["depends_on"]["model-server"]["condition"] == "service_healthy"


def test_compose_references_only_things_that_exist() -> None:
    named_volumes = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source == "/var/run/docker.sock":
                assert name == "alloy", f"{name} mounts the Docker socket"
            elif source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"
        for config in service.get("configs", []):
            assert config["source"] in COMPOSE["configs"], f"{name} uses undeclared config {config['source']}"
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), f"{name} publishes {published} beyond this machine"


def test_compose_grafana_reads_the_prometheus_the_dashboard_expects() -> None:
    [source] = [
        source for source in yaml.safe_load(compose_content("grafana-datasource"))["datasources"] if source["isDefault"]
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    dashboard = (REPO_ROOT / "monitoring" / "grafana" / "dashboards" / "mlops.json").read_text()
    assert f'"uid": "{source["uid"]}"' in dashboard


@pytest.mark.needs("promtool")
def test_compose_prometheus_config_and_rules_pass_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load(compose_content("prometheus"))
    assert [job["job_name"] for job in config["scrape_configs"]] == ["mlops"]
    assert config["scrape_configs"][0]["dns_sd_configs"][0]["names"] == ["model-server"]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "alertmanager" in SERVICES
    shutil.copytree(REPO_ROOT / "monitoring" / "rules", tmp_path / "rules")
    (tmp_path / "prometheus.yml").write_text(compose_content("prometheus").replace("/etc/prometheus/", ""))
    result = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout and "rules found" in result.stdout


def test_compose_load_balancer_config_passes_nginx_check(tmp_path: Path) -> None:
    # The service name only resolves inside compose's network; any address checks the rest.
    (tmp_path / "default.conf").write_text(compose_content("load-balancer").replace("model-server:", "127.0.0.1:"))
    (tmp_path / "nginx.conf").write_text(
        "pid nginx.pid;\nerror_log stderr;\nevents {}\nhttp { include default.conf; }\n"
    )
    result = subprocess.run(
        [need("nginx"), "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_alloy_ships_the_servers_log_lines_to_the_loki_that_grafana_reads() -> None:
    alloy = (REPO_ROOT / "monitoring" / "alloy" / "config.alloy").read_text()
    loki_port = SERVICES["loki"]["ports"][0].rsplit(":", 1)[1]
    assert f'url = "http://loki:{loki_port}/loki/api/v1/push"' in alloy
    mounted = [volume.split(":")[1] for volume in SERVICES["alloy"]["volumes"]]
    assert SERVICES["alloy"]["command"][1] in mounted and "/var/run/docker.sock" in mounted
    for field in ("request_id", "variant", "version", "status"):
        assert re.search(rf'{field}\s*=\s*"{field}"', alloy), field
    sources = {source["uid"]: source for source in yaml.safe_load(compose_content("grafana-datasource"))["datasources"]}
    assert sources["loki"]["url"] == f"http://loki:{loki_port}"
    [derived] = sources["loki"]["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == "loki" and "${__value.raw}" in derived["url"]
    dashboard = json.loads((REPO_ROOT / "monitoring" / "grafana" / "dashboards" / "mlops.json").read_text())
    [logs] = [panel for panel in dashboard["panels"] if panel["type"] == "logs"]
    assert logs["datasource"]["uid"] == "loki" and '{service="model-server"}' in logs["targets"][0]["expr"]
