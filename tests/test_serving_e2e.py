"""The real `mlops serve` (uvicorn in a subprocess) on a real MLflow registry: aliases, batching under
concurrency, JSON access logs, hot reload under load, a broken version, and a schemathesis fuzz run.

The tests share one server and run in file order: the reload tests move aliases, so they come last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from conftest import BIN, tiny_params, write_params
from mlops.serving.router import route
from monitoring_stack import free_port, sample, series_absent, wait_for
from serving_helpers import broken_copy

pytestmark = pytest.mark.slow

MODEL_NAME = "served-model"
SERVING = {
    "challenger_share": 0.5,
    "reload_seconds": 3600,
    "max_items": 8,
    "max_text_chars": 200,
    "server_processes": 2,
}
CHAMPION_USER = next(key for key in (f"user-{n}" for n in range(100)) if route(key, 0.5) == "champion")


@dataclass
class Registry:
    directory: Path
    uri: str
    client: MlflowClient
    run_id: str
    model_uri: str

    def register(self, source: str | None = None) -> str:
        """A new version of the trained model, or of whatever ``source`` holds."""
        if source is not None:
            return str(self.client.create_model_version(MODEL_NAME, source, run_id=self.run_id).version)
        logged = self.client.get_logged_model(self.model_uri.removeprefix("models:/"))
        created = self.client.create_model_version(
            MODEL_NAME, logged.artifact_location, run_id=self.run_id, model_id=logged.model_id
        )
        return str(created.version)

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(MODEL_NAME, alias, version)


@dataclass
class Server:
    url: str
    stdout: Path
    stderr: Path
    process: subprocess.Popen


def copy_registry(pipeline_project: Path, directory: Path) -> Registry:
    """A copy of the trained project's tracking store with the run registered twice: champion 1, challenger 2."""
    shutil.copy(pipeline_project / "mlflow.db", directory / "mlflow.db")
    run = json.loads((pipeline_project / "models" / "run.json").read_text())
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    found = Registry(directory, uri, MlflowClient(tracking_uri=uri, registry_uri=uri), run["run_id"], run["model_uri"])
    found.client.create_registered_model(MODEL_NAME)
    found.set_alias("champion", found.register())
    found.set_alias("challenger", found.register())
    return found


@pytest.fixture(scope="module")
def registry(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return copy_registry(pipeline_project, tmp_path_factory.mktemp("registry"))


def serve_command(params: Path, port: int) -> list[str]:
    return [str(BIN / "mlops"), "serve", "--params", str(params), "--port", str(port), "--fault-injection"]


@contextlib.contextmanager
def serving(directory: Path, serving_params: dict, *args: str, env: dict | None = None) -> Iterator[Server]:
    """`mlops serve` run from ``directory`` with tiny params and these serving settings, until the context exits."""
    params = directory / "params.yaml"
    write_params(directory, tiny_params(tracking={"registered_model": MODEL_NAME}, serving=serving_params))
    port = free_port()
    stdout, stderr = directory / "access.log", directory / "server.log"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            [*serve_command(params, port), *args],
            cwd=directory,
            stdout=out,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"mlops serve exited {process.returncode}:\n{stderr.read_text()[-3000:]}")
            return httpx.get(f"{url}/readyz").status_code == 200

        wait_for(ready, 300, "mlops serve to load its models")
        yield Server(url, stdout, stderr, process)
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(registry: Registry) -> Iterator[Server]:
    with serving(registry.directory, SERVING, env={"MLFLOW_TRACKING_URI": registry.uri}) as running:
        yield running


def predict(server: Server, **body: object) -> dict:
    response = httpx.post(f"{server.url}/predict", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def metrics(server: Server) -> str:
    return httpx.get(f"{server.url}/metrics").text


def access_log(server: Server, request_ids: set[str]) -> dict[str, dict]:
    """The access log's lines by request id, once it holds every one of ``request_ids``."""

    def logged() -> dict[str, dict]:
        entries = {entry["request_id"]: entry for entry in map(json.loads, server.stdout.read_text().splitlines())}
        return entries if request_ids <= entries.keys() else {}

    return wait_for(logged, 10, f"{len(request_ids)} requests in the access log")


def test_serves_the_champion_and_challenger_aliases_with_sticky_routing(server: Server) -> None:
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready", "champion": "1", "challenger": "2"}
    answers = {key: predict(server, text="a tender, funny film", key=key) for key in map(str, range(30))}
    assert {(answer["variant"], answer["version"]) for answer in answers.values()} == {
        ("champion", "1"),
        ("challenger", "2"),
    }
    for key, answer in list(answers.items())[:5]:
        again = httpx.post(f"{server.url}/predict", json={"text": "other words"}, headers={"X-User-Id": key}).json()
        assert again["variant"] == answer["variant"]
    exposition = metrics(server)
    assert sample(exposition, "mlops_model_info", variant="champion", version="1", model=MODEL_NAME) == 1
    assert sample(exposition, "mlops_model_info", variant="challenger", version="2", model=MODEL_NAME) == 1


def test_concurrent_requests_are_batched_on_the_server(server: Server) -> None:
    before = metrics(server)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/predict", json={"text": f"text number {n}", "key": "one user"}) for n in range(48))
            )

    responses = asyncio.run(burst())
    assert {response.status_code for response in responses} == {200}
    variant = responses[0].json()["variant"]
    after = metrics(server)
    texts = sample(after, "mlops_batch_size_sum", variant=variant) - sample(
        before, "mlops_batch_size_sum", variant=variant
    )
    batches = sample(after, "mlops_batch_size_count", variant=variant) - sample(
        before, "mlops_batch_size_count", variant=variant
    )
    assert texts == 48
    assert batches < 48, "every request was scored alone"


def test_access_logs_are_one_json_object_per_line(server: Server) -> None:
    answer = predict(server, texts=["fine", "poor"], key="logger")
    rejected = httpx.post(f"{server.url}/predict", json={"texts": []}).headers["x-request-id"]
    entries = access_log(server, {answer["request_id"], rejected})
    entry = entries[answer["request_id"]]
    assert entry["status"] == 200 and entry["path"] == "/predict" and entry["method"] == "POST"
    assert (entry["variant"], entry["version"]) == (answer["variant"], answer["version"])
    assert entry["latency_ms"] > 0 and entry["time"].endswith("+00:00")
    assert entries[rejected]["status"] == 422 and entries[rejected]["version"] is None


def test_a_feedback_log_line_joins_its_prediction_by_request_id(server: Server) -> None:
    """What a log search (Loki, OpenSearch) relies on: feedback names the request it judges, and both lines carry
    the variant and version that answered."""
    answer = predict(server, texts=["fine", "poor"], key="joiner")
    label = answer["predictions"][1]["label"]
    judged = httpx.post(f"{server.url}/feedback", json={"request_id": answer["request_id"], "index": 1, "label": label})
    assert judged.status_code == 200, judged.text
    feedback_id = judged.headers["x-request-id"]
    entries = access_log(server, {answer["request_id"], feedback_id})
    prediction, feedback = entries[answer["request_id"]], entries[feedback_id]
    assert feedback["path"] == "/feedback" and feedback["for_request_id"] == answer["request_id"]
    assert (feedback["variant"], feedback["version"]) == (prediction["variant"], prediction["version"])
    assert (prediction["variant"], prediction["version"]) == (answer["variant"], answer["version"])
    assert "for_request_id" not in prediction


# Several server processes (serving.server_processes) share the port and answer as one server


def answering_processes(server: Server, requests: list[httpx.Response]) -> list[int]:
    """The pid of the server process that answered each request, from the access log."""
    entries = access_log(server, {request.headers["x-request-id"] for request in requests})
    return [entries[request.headers["x-request-id"]]["pid"] for request in requests]


def test_feedback_and_metrics_count_across_the_server_processes(server: Server) -> None:
    """Each new connection reaches either process: feedback finds its prediction in the process that answered
    it, and /metrics counts every process's requests whichever process a scrape reaches."""
    before = metrics(server)
    texts = {"key": CHAMPION_USER}
    answers = [httpx.post(f"{server.url}/predict", json={"text": f"review {n}", **texts}) for n in range(40)]
    judged = [
        httpx.post(
            f"{server.url}/feedback",
            json={"request_id": answer.json()["request_id"], "label": answer.json()["predictions"][0]["label"]},
        )
        for answer in answers
    ]
    assert [response.status_code for response in answers + judged] == [200] * 80
    predicted_in, judged_in = answering_processes(server, answers), answering_processes(server, judged)
    assert len(set(predicted_in)) == 2, "one process took every connection"
    assert any(map(int.__ne__, predicted_in, judged_in)), "no feedback reached the other process"
    for _ in range(4):
        after = metrics(server)
        for name, labels in [
            ("mlops_requests_total", {"status": "200"}),
            ("mlops_feedback_total", {"correct": "true"}),
        ]:
            counted = sample(after, name, variant="champion", **labels) - sample(
                before, name, variant="champion", **labels
            )
            assert counted == 40, name


def test_an_injected_fault_reaches_every_server_process(server: Server) -> None:
    def ask() -> list[httpx.Response]:
        return [httpx.post(f"{server.url}/predict", json={"text": "x", "key": CHAMPION_USER}) for _ in range(20)]

    fault = {"variant": "champion", "error_rate": 1.0, "delay_ms": 0}
    assert httpx.post(f"{server.url}/admin/faults", json=fault).status_code == 200
    try:
        failed = ask()
    finally:
        httpx.post(f"{server.url}/admin/faults", json={**fault, "error_rate": 0.0})
    assert {response.status_code for response in failed} == {500}
    assert len(set(answering_processes(server, failed))) == 2
    assert {response.status_code for response in ask()} == {200}


def test_schemathesis_finds_no_server_error_or_undocumented_response(server: Server, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path",
            "/admin/faults",  # it makes the server fail on purpose
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--seed",
            "1",
            "--request-timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-5000:]


def test_a_moved_alias_is_served_after_reload_without_failing_in_flight_requests(
    server: Server, registry: Registry
) -> None:
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            while not stop.is_set():
                response = client.post("/predict", json={"text": "steady traffic", "key": CHAMPION_USER})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["version"])

    clients = [threading.Thread(target=keep_asking) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: len(versions) > 10, 60, "traffic on the old version")
        new_version = registry.register()
        registry.set_alias("champion", new_version)
        report = httpx.post(f"{server.url}/admin/reload", timeout=300).json()
        assert report["champion"] == {"version": new_version, "changed": True, "error": None}
        assert report["challenger"] == {"version": "2", "changed": False, "error": None}
        seen_after = len(versions)
        wait_for(lambda: len(versions) > seen_after + 10, 60, "traffic on the new version")
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert set(statuses) == {200}
    assert versions[0] == "1" and versions[-1] == new_version
    exposition = metrics(server)
    assert sample(exposition, "mlops_model_info", variant="champion", version=new_version) == 1
    assert series_absent(exposition, "mlops_model_info", variant="champion", version="1")


def test_a_version_that_fails_to_load_leaves_the_old_one_serving(server: Server, registry: Registry) -> None:
    serving = httpx.get(f"{server.url}/readyz").json()["champion"]
    broken = registry.directory / "broken-model"
    broken.mkdir()
    (broken / "MLmodel").write_text("this: is not [a model\n")
    registry.set_alias("champion", registry.register(str(broken)))
    report = httpx.post(f"{server.url}/admin/reload", timeout=300).json()
    assert report["champion"]["version"] == serving and "cannot load" in report["champion"]["error"]
    assert predict(server, text="still here", key=CHAMPION_USER)["version"] == serving
    assert sample(metrics(server), "mlops_model_load_failures_total", variant="champion") == 1
    registry.set_alias("champion", serving)


def test_removing_the_challenger_alias_sends_everyone_to_the_champion(server: Server, registry: Registry) -> None:
    registry.client.delete_registered_model_alias(MODEL_NAME, "challenger")
    report = httpx.post(f"{server.url}/admin/reload", timeout=300).json()
    assert report["challenger"] == {"version": None, "changed": True, "error": None}
    assert {predict(server, text="x", key=str(key))["variant"] for key in range(20)} == {"champion"}
    assert series_absent(metrics(server), "mlops_model_info", variant="challenger")


def test_no_champion_in_the_registry_is_a_one_line_error(tmp_path: Path) -> None:
    write_params(tmp_path, tiny_params(tracking={"registered_model": MODEL_NAME}))
    MlflowClient(f"sqlite:///{tmp_path / 'empty.db'}").search_experiments()  # an empty store (a missing one is refused)
    result = subprocess.run(
        serve_command(tmp_path / "params.yaml", free_port()),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'empty.db'}"},
        timeout=300,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no version of 'served-model' has the alias 'champion'"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


# Limits: what one connection may cost, and admission control (a server of its own, small limits)

GUARDED = {"read_timeout_seconds": 1, "max_queued_texts": 4, "max_items": 4, "max_text_chars": 50}


@pytest.fixture(scope="module")
def guarded_server(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    model = str(pipeline_project / "models" / "model")
    with serving(tmp_path_factory.mktemp("guarded"), GUARDED, "--champion", model) as running:
        yield running


def exchange(server: Server, sent: bytes) -> bytes:
    """What the server answers on a raw connection to ``sent`` (all of it, until it closes the connection)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        with contextlib.suppress(ConnectionError):  # the server refused part-way and closed: its answer remains
            connection.sendall(sent)
        answer = b""
        with contextlib.suppress(ConnectionError):
            while chunk := connection.recv(65536):
                answer += chunk
    return answer


def test_a_request_whose_headers_never_finish_is_cut_off_with_408(guarded_server: Server) -> None:
    answer = exchange(guarded_server, b"POST /predict HTTP/1.1\r\nHost: test\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer


def test_a_body_that_never_finishes_is_cut_off_with_408_naming_the_setting(guarded_server: Server) -> None:
    answer = exchange(guarded_server, b'POST /predict HTTP/1.1\r\nHost: test\r\ncontent-length: 40\r\n\r\n{"te')
    assert answer.startswith(b"HTTP/1.1 408 ") and b"serving.read_timeout_seconds" in answer


def test_a_declared_50_mb_body_is_refused_before_it_is_read(guarded_server: Server) -> None:
    headers = b"POST /predict HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\ncontent-length: 50000000\r\n"
    answer = exchange(guarded_server, headers + b"\r\n" + b"x" * 65536)  # the other 49.9 MB are never sent
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer
    assert b"serving.max_items" in answer


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(guarded_server: Server) -> None:
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    headers = (
        b"POST /predict HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
    )
    answer = exchange(guarded_server, headers + b"\r\n" + chunk * 800)  # 50 MB offered
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert sample(metrics(guarded_server), "mlops_requests_total", variant="champion", status="413") >= 2


def test_a_burst_beyond_the_queue_bound_gets_503_with_retry_after_and_is_counted(guarded_server: Server) -> None:
    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=guarded_server.url, timeout=120, limits=limits) as client:
            body = {"texts": ["one", "two", "three"]}
            return await asyncio.gather(*(client.post("/predict", json=body) for _ in range(100)))

    responses = asyncio.run(burst())
    refused = [response for response in responses if response.status_code == 503]
    assert {response.status_code for response in responses} == {200, 503}
    assert {response.headers["retry-after"] for response in refused} == {"1"}
    exposition = metrics(guarded_server)
    assert sample(exposition, "mlops_rejected_requests_total", variant="champion") == len(refused)
    assert sample(exposition, "mlops_requests_total", variant="champion", status="503") == len(refused)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--port", "70000"], "error: --port 70000 is not a TCP port"),
        (["--port", "-1"], "error: --port -1 is not a TCP port"),
        (["--host", "999.0.0.1"], "error: --host '999.0.0.1' is not an address of this machine"),
        (["--host", "no-such-host.invalid"], "error: --host 'no-such-host.invalid' is not an address"),
    ],
)
def test_an_address_that_cannot_be_listened_on_is_refused_in_one_line(arguments: list[str], message: str) -> None:
    result = subprocess.run([str(BIN / "mlops"), "serve", *arguments], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_a_port_in_use_is_refused_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(BIN / "mlops"), "serve", "--port", str(port)], capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port} (Address already in use): " + (
        "choose another --port or --host"
    )


def test_a_champion_with_nan_weights_stops_the_server_at_start_with_one_line(
    pipeline_project: Path, tmp_path: Path
) -> None:
    broken = broken_copy(pipeline_project / "models" / "model", tmp_path / "broken", "NaN weights")
    write_params(tmp_path, tiny_params())
    result = subprocess.run(
        [*serve_command(tmp_path / "params.yaml", free_port()), "--champion", str(broken)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: refusing {broken}: it gives NaN"), result.stderr
    assert "Traceback" not in result.stderr


# The supervisor of the server processes


@contextlib.contextmanager
def two_processes(pipeline_project: Path, directory: Path) -> Iterator[tuple[Server, list[int]]]:
    """A server of two processes on the trained model folder, and the pids of the two."""
    model = str(pipeline_project / "models" / "model")
    with serving(directory, {"server_processes": 2}, "--champion", model) as running:
        answers = [httpx.post(f"{running.url}/predict", json={"text": "x"}) for _ in range(40)]
        yield running, sorted(set(answering_processes(running, answers)))


def test_a_server_process_that_dies_stops_the_others_with_a_one_line_error(
    pipeline_project: Path, tmp_path: Path
) -> None:
    with two_processes(pipeline_project, tmp_path) as (server, [killed, survivor]):
        os.kill(killed, signal.SIGKILL)
        assert server.process.wait(timeout=60) == 1
    last = server.stderr.read_text().strip().splitlines()[-1]
    assert last.startswith("error: mlops-serve-") and last.endswith(
        f"(pid {killed}) exited (killed by SIGKILL): stopped the others; see its log above"
    ), last
    assert not Path(f"/proc/{survivor}").exists()


def test_sigterm_lets_every_server_process_finish_and_exits_0(pipeline_project: Path, tmp_path: Path) -> None:
    with two_processes(pipeline_project, tmp_path) as (server, pids):
        server.process.terminate()
        assert server.process.wait(timeout=60) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert "Traceback" not in server.stderr.read_text()


# The periodic registry poll (serving.reload_seconds), without /admin/reload


def test_the_server_follows_moved_aliases_by_itself_and_keeps_serving_through_a_broken_version(
    pipeline_project: Path, tmp_path: Path
) -> None:
    registry = copy_registry(pipeline_project, tmp_path)
    polling = {**SERVING, "reload_seconds": 0.5}
    with serving(tmp_path, polling, env={"MLFLOW_TRACKING_URI": registry.uri}) as polled:

        def champion() -> str:
            return httpx.get(f"{polled.url}/readyz").json()["champion"]

        assert champion() == "1"
        logged = registry.client.get_logged_model(registry.model_uri.removeprefix("models:/"))
        broken = broken_copy(Path(logged.artifact_location), tmp_path / "nan-model", "NaN weights")
        registry.set_alias("champion", registry.register(str(broken)))
        wait_for(
            lambda: sample(metrics(polled), "mlops_model_load_failures_total", variant="champion") >= 1,
            120,
            "the poll to refuse the broken version",
        )
        assert champion() == "1" and predict(polled, text="still fine", key=CHAMPION_USER)["version"] == "1"

        good = registry.register()
        registry.set_alias("champion", good)
        wait_for(lambda: champion() == good, 120, f"the poll to serve version {good}")
        assert predict(polled, text="new version", key=CHAMPION_USER)["version"] == good
