"""The real monitoring stack for tests: `mlops serve`, Prometheus, Alertmanager and a webhook receiver.

Everything listens on 127.0.0.1 on a free port, waits until it answers, and is stopped when its
context exits. Configurations are the shipped ones from monitoring/ with only what a test must change
(ports, a 1-second scrape interval, minutes of the alert rules turned into seconds).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, REPO_ROOT
from needs import need
from servers import free_port

MONITORING = REPO_ROOT / "monitoring"
RULES = MONITORING / "rules" / "alerts.yml"
needs_prometheus = pytest.mark.needs("prometheus", "alertmanager")

T = TypeVar("T")


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            result = check()
            if result:
                return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def running(command: list[str], log: Path, ready_url: str, timeout: float, env: dict | None = None) -> Iterator[None]:
    """Run ``command`` until the context exits; ready when ``ready_url`` answers 200. Its output goes to ``log``."""
    with log.open("w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=log.parent
        )
    try:

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"{command[0]} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            return httpx.get(ready_url, timeout=2).status_code == 200

        wait_for(ready, timeout, f"{command[0]} to answer {ready_url} (log: {log})")
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def mlops_serve(
    workdir: Path, params: Path, *args: str, env: dict | None = None, timeout: float = 120
) -> Iterator[str]:
    """`mlops serve ARGS --fault-injection` on a free port; yields its base URL."""
    port = free_port()
    command = [str(BIN / "mlops"), "serve", "--params", str(params), "--port", str(port), "--fault-injection", *args]
    url = f"http://127.0.0.1:{port}"
    with running(command, workdir / "serve.log", f"{url}/readyz", timeout, env):
        yield url


def fast_rules(seconds_per_minute: int) -> str:
    """The shipped alert rules with every duration in minutes (ranges, `for:`, offsets) turned into seconds."""
    return re.sub(r"\b(\d+)m\b", lambda match: f"{int(match[1]) * seconds_per_minute}s", RULES.read_text())


@contextlib.contextmanager
def prometheus(
    workdir: Path, target: str | None, rules: str | None = None, alertmanager: str | None = None
) -> Iterator[str]:
    """Prometheus from monitoring/prometheus.yml, scraping ``target`` (host:port) every second; yields its URL."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}] if target else []
    config["rule_files"] = []
    if rules is not None:
        (workdir / "alerts.yml").write_text(rules)
        config["rule_files"] = ["alerts.yml"]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}] if alertmanager else []
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [
        need("prometheus"),
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--rules.alert.resend-delay=1s",
    ]
    url = f"http://127.0.0.1:{port}"
    with running(command, workdir / "prometheus.log", f"{url}/-/ready", timeout=60):
        yield url


@contextlib.contextmanager
def alertmanager(workdir: Path, webhook: str) -> Iterator[str]:
    """Alertmanager from monitoring/alertmanager.yml with every webhook moved to ``webhook`` (path kept)
    and 1-second grouping; yields host:port."""
    config = yaml.safe_load((MONITORING / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook + httpx.URL(hook["url"]).path
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    command = [
        need("alertmanager"),
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip port: one instance
    ]
    with running(command, workdir / "alertmanager.log", f"http://127.0.0.1:{port}/-/ready", timeout=60):
        yield f"127.0.0.1:{port}"


@dataclass
class Notification:
    path: str
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """Records every POST it gets, as Alertmanager's webhook receiver would be sent."""

    url: str
    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, alertname: str, status: str, path: str | None = None) -> list[dict]:
        """The alerts named ``alertname`` that arrived with ``status`` (firing/resolved), at ``path`` if given."""
        with self.lock:
            notifications = list(self.notifications)
        return [
            alert
            for notification in notifications
            if path is None or notification.path == path
            for alert in notification.body.get("alerts", [])
            if alert["labels"].get("alertname") == alertname and alert["status"] == status
        ]


@contextlib.contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A local HTTP server in a thread that records the JSON Alertmanager posts to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    receiver = WebhookReceiver(f"http://127.0.0.1:{server.server_address[1]}")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with receiver.lock:
                receiver.notifications.append(Notification(self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:  # keep pytest's output clean
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _matching(metrics_text: str, name: str, labels: dict[str, str]) -> list[float]:
    return [
        found.value
        for family in text_string_to_metric_families(metrics_text)
        for found in family.samples
        if found.name == name and all(found.labels.get(key) == value for key, value in labels.items())
    ]


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples of a Prometheus exposition matching a name and labels.

    Fails the test when no sample matches: a removed (or never created) series is not a series at 0.
    """
    values = _matching(metrics_text, name, labels)
    if not values:
        pytest.fail(f"no series {name}{labels} in the exposition (removed, or never created)")
    return sum(values)


def series_absent(metrics_text: str, name: str, **labels: str) -> bool:
    """No sample matches: the series was removed or never created (unlike one that is 0)."""
    return not _matching(metrics_text, name, labels)


def query(prometheus_url: str, promql: str) -> list[dict]:
    """An instant query's result; fails the test when Prometheus rejects it."""
    body = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert body["status"] == "success", f"{promql}: {body.get('error')}"
    return body["data"]["result"]


def firing(prometheus_url: str, alertname: str) -> list[dict]:
    """Prometheus's firing alerts named ``alertname``."""
    alerts = httpx.get(f"{prometheus_url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"]


SAMPLE_TEXTS = [
    "A warm, funny film with a terrific cast.",
    "Dull, overlong and badly acted.",
    "The best thriller of the year, tense from start to finish.",
    "I wanted my two hours back.",
    "Charming if slight; the kids will love it.",
    "A mess of a script rescued by nothing.",
]


class FeedbackClient:
    """Drives `mlops serve` like its users: predictions, and the true label for each answered one."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.http = httpx.Client(timeout=30)
        self.sent = 0

    def predict_and_confirm(self, requests: int) -> None:
        """``requests`` predictions with feedback confirming each answered one (so accuracy is 100%)."""
        for _ in range(requests):
            self.sent += 1
            text = SAMPLE_TEXTS[self.sent % len(SAMPLE_TEXTS)]
            response = self.http.post(f"{self.server}/predict", json={"text": text, "key": f"user-{self.sent}"})
            if response.status_code == 200:
                answer = response.json()
                label = answer["predictions"][0]["label"]
                feedback = {"request_id": answer["request_id"], "label": label}
                self.http.post(f"{self.server}/feedback", json=feedback).raise_for_status()


def set_fault(server_url: str, variant: str, error_rate: float = 0.0, delay_ms: float = 0.0) -> None:
    """POST /admin/faults: the variant fails at ``error_rate`` and waits ``delay_ms``; zeros clear it."""
    response = httpx.post(
        f"{server_url}/admin/faults",
        json={"variant": variant, "error_rate": error_rate, "delay_ms": delay_ms},
        timeout=10,
    )
    response.raise_for_status()


@contextlib.contextmanager
def traffic(server_url: str, workers: int = 6, pause: float = 0.1) -> Iterator[None]:
    """Background clients posting texts (each request a new routing key) until the context exits.

    Each worker pauses between requests, so the load stays modest on a shared machine.
    """
    stop = threading.Event()

    def worker(number: int) -> None:
        with httpx.Client(timeout=30) as client:
            sent = 0
            while not stop.is_set():
                text = SAMPLE_TEXTS[sent % len(SAMPLE_TEXTS)]
                with contextlib.suppress(httpx.HTTPError):
                    client.post(f"{server_url}/predict", json={"text": text, "key": f"{number}-{sent}"})
                sent += 1
                stop.wait(pause)

    threads = [threading.Thread(target=worker, args=(number,), daemon=True) for number in range(workers)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=35)
