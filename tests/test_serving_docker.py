"""The Dockerfile and docker-compose.yml cannot be built here (no images, no network): check that
everything they refer to exists and agrees with the code, and run promtool on the compose Prometheus config."""

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
    assert instructions("FROM") == ["python:3.11-slim"]
    assert instructions("USER") == ["mlops"]
    [cmd] = instructions("CMD")
    assert json.loads(cmd)[:4] == ["mlops", "serve", "--host", "0.0.0.0"]
    [port] = instructions("EXPOSE")
    assert json.loads(cmd)[json.loads(cmd).index("--port") + 1] == port
    [healthcheck] = instructions("HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/healthz" in healthcheck
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
            if source.startswith("."):
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"
        for config in service.get("configs", []):
            assert config["source"] in COMPOSE["configs"], f"{name} uses undeclared config {config['source']}"
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), f"{name} publishes {published} beyond this machine"


def test_compose_grafana_reads_the_prometheus_the_dashboard_expects() -> None:
    [source] = yaml.safe_load(compose_content("grafana-datasource"))["datasources"]
    assert source["url"] == "http://prometheus:9090"
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
