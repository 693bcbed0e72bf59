"""The model server in-process: routing, batching, the HTTP contract, feedback, shadow mode and faults.

The app runs in Starlette's TestClient (lifespan included) on model folders copied from the trained
tiny project; tests/test_serving_e2e.py runs the real `mlops serve` against a real registry.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import tiny_params
from mlops.config import Params
from mlops.serving.app import RecentPredictions, build_server, create_app
from mlops.serving.batcher import Batcher
from mlops.serving.models import ModelSource, ServingError
from mlops.serving.router import bucket, route
from mlops.serving.workers import InferenceError, InferenceWorkers, inference_workers, server_processes
from monitoring_stack import sample
from serving_helpers import broken_copy

LIMITS = {"max_items": 4, "max_text_chars": 50}
LABELS = tiny_params()["data"]["labels"]


def params_with(**serving: object) -> Params:
    return Params.model_validate(tiny_params(serving={**LIMITS, **serving}))


@pytest.fixture(scope="module")
def model_versions(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two copies of the trained model named v1 and v2: folder names are the versions the server reports."""
    root = tmp_path_factory.mktemp("versions")
    return tuple(shutil.copytree(pipeline_project / "models" / "model", root / name) for name in ("v1", "v2"))


@pytest.fixture
def client_for(model_versions: tuple[Path, Path]) -> Iterator:
    opened: list[TestClient] = []

    def open_client(challenger: bool = True, fault_injection: bool = False, **serving: object) -> TestClient:
        sources = {"champion": ModelSource(str(model_versions[0]))}
        if challenger:
            sources["challenger"] = ModelSource(str(model_versions[1]))
        server = build_server(params_with(**serving), sources, fault_injection)
        client = TestClient(create_app(server)).__enter__()
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.__exit__(None, None, None)


# Routing


def test_routing_is_sticky_and_splits_keys_by_share() -> None:
    keys = [f"user-{number}" for number in range(20_000)]
    first = [route(key, 0.1) for key in keys]
    assert first == [route(key, 0.1) for key in keys]
    assert abs(first.count("challenger") / len(keys) - 0.1) < 0.01
    assert all(0 <= bucket(key) < 1 for key in keys[:100])


def test_growing_the_share_only_moves_users_to_the_challenger() -> None:
    keys = [f"user-{number}" for number in range(5_000)]
    at_ten = {key for key in keys if route(key, 0.1) == "challenger"}
    at_fifty = {key for key in keys if route(key, 0.5) == "challenger"}
    assert at_ten < at_fifty
    assert {route(key, 0.0) for key in keys} == {"champion"}
    assert {route(key, 1.0) for key in keys} == {"challenger"}


# Batching


class SlowModel:
    """Records each batch; holds it until released so requests pile up behind the first batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.release = asyncio.Event()

    async def __call__(self, texts: list[str]) -> np.ndarray:
        await asyncio.wait_for(self.release.wait(), timeout=30)
        self.batches.append(texts)
        return np.array([[len(text), 0.0] for text in texts])


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows() -> None:
    model = SlowModel()

    async def scenario() -> list[np.ndarray]:
        batcher = Batcher(model, max_batch_size=8, max_wait_seconds=0.05)
        batcher.start()
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.sleep(0.05)  # the first batch is now running and holding the worker
        rest = [asyncio.create_task(batcher.submit(["b" * size] * 2)) for size in range(1, 9)]
        await asyncio.sleep(0.05)
        model.release.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results

    results = asyncio.run(scenario())
    assert [len(batch) for batch in model.batches] == [1, 8, 8]
    assert results[0].tolist() == [[1, 0]]
    for size, rows in enumerate(results[1:], start=1):
        assert rows.tolist() == [[size, 0], [size, 0]]


def test_requests_queued_in_the_turn_after_the_first_join_its_batch() -> None:
    """Clients answered together ask again together: the loop reads the others' requests just after the first."""
    model = SlowModel()
    model.release.set()

    async def scenario() -> None:
        batcher = Batcher(model, max_batch_size=8, max_wait_seconds=0)
        batcher.start()
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.sleep(0)  # the first request is queued (and wakes the batcher) in this turn ...
        others = [asyncio.create_task(batcher.submit([text])) for text in "bcd"]  # ... the others in the next
        await asyncio.gather(first, *others)
        await batcher.close()

    asyncio.run(scenario())
    assert model.batches == [["a", "b", "c", "d"]]


def test_server_processes_and_inference_workers_default_to_sharing_the_cpus_the_process_may_use() -> None:
    settings = Params.model_validate(tiny_params()).serving
    assert settings.server_processes is None and server_processes(settings) == joblib.cpu_count() >= 1
    assert settings.inference_workers is None and inference_workers(settings) == 0  # each process scores itself
    assert inference_workers(settings.model_copy(update={"server_processes": 64})) == 0
    one_process = settings.model_copy(update={"server_processes": 1})
    assert server_processes(one_process) == 1
    assert inference_workers(one_process) == (joblib.cpu_count() if joblib.cpu_count() > 1 else 0)
    assert inference_workers(settings.model_copy(update={"inference_workers": 4})) == 4


def test_with_two_inference_workers_a_second_batch_runs_while_the_first_is_scored() -> None:
    async def scenario() -> None:
        both_started = asyncio.Barrier(3)

        async def model(texts: list[str]) -> np.ndarray:
            await both_started.wait()  # each batch waits here until the other has started too
            return np.zeros((len(texts), 2))

        batcher = Batcher(model, max_batch_size=1, max_wait_seconds=0, concurrency=2)
        batcher.start()
        pending = [asyncio.create_task(batcher.submit([text])) for text in "ab"]
        await asyncio.wait_for(both_started.wait(), timeout=30)
        await asyncio.gather(*pending)
        await batcher.close()

    asyncio.run(scenario())


def test_a_worker_that_dies_on_a_batch_fails_that_batch_only_and_the_next_batch_gets_a_new_one() -> None:
    async def scenario() -> None:
        workers = InferenceWorkers(sys.exit, processes=1, threads=1)  # sys.exit(texts) ends the worker's process
        await workers.start()
        [first] = workers.pids
        with pytest.raises(InferenceError, match=f"inference worker \\(pid {first}\\) died"):
            await workers.score(["x"])
        with pytest.raises(InferenceError, match="died") as second:  # a replacement took the next batch
            await workers.score(["y"])
        [replacement] = workers.pids
        assert replacement != first and f"(pid {replacement})" in str(second.value)
        await workers.close()

    asyncio.run(scenario())


def test_a_worker_killed_between_batches_is_replaced_before_the_next_request_reaches_it(client_for) -> None:
    client = client_for(challenger=False, inference_workers=1)
    workers = client.app.server.pool.get("champion").workers
    [killed] = workers.pids
    os.kill(killed, signal.SIGKILL)
    while Path(f"/proc/{killed}").exists() and Path(f"/proc/{killed}/stat").read_text().split()[2] != "Z":
        time.sleep(0.01)
    answer = client.post("/predict", json={"text": "a fine film"})
    assert answer.status_code == 200, answer.text
    [replacement] = workers.pids
    assert replacement != killed


def test_a_lone_request_does_not_wait_for_company() -> None:
    model = SlowModel()

    async def scenario() -> None:
        model.release.set()
        # A wait this long would time the test out if a lone request paid it.
        batcher = Batcher(model, max_batch_size=8, max_wait_seconds=600)
        batcher.start()
        for _ in range(3):
            await asyncio.wait_for(batcher.submit(["alone"]), timeout=60)
        await batcher.close()

    asyncio.run(scenario())
    assert model.batches == [["alone"]] * 3


def test_a_model_failure_reaches_every_request_in_the_batch_and_the_batcher_survives() -> None:
    calls = []

    async def flaky(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return np.zeros((len(texts), 2))

    async def scenario() -> None:
        batcher = Batcher(flaky, max_batch_size=8, max_wait_seconds=0)
        batcher.start()
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.submit(["x"])
        assert (await batcher.submit(["y", "z"])).shape == (2, 2)
        await batcher.close()

    asyncio.run(scenario())


def test_closing_finishes_the_requests_already_queued() -> None:
    model = SlowModel()

    async def scenario() -> list[np.ndarray]:
        batcher = Batcher(model, max_batch_size=2, max_wait_seconds=0)
        batcher.start()
        pending = [asyncio.create_task(batcher.submit([str(n)])) for n in range(5)]
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(batcher.close())
        model.release.set()
        await closing
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.submit(["late"])
        return await asyncio.gather(*pending)

    assert len(asyncio.run(scenario())) == 5


def test_remembered_answers_drop_out_of_the_garbage_collectors_sight() -> None:
    """A full feedback window must not lengthen full collections: they stop the whole server (issue 15's tail)."""
    recent = RecentPredictions(capacity=100)
    for number in range(100):
        recent.add(f"request-{number}", "champion", "1", ["fresh", "rotten"], ["rotten", "fresh"])
        recent.add(f"request-{number}", "challenger", "2", ["rotten", "rotten"], ["rotten", "fresh"])
    recent.judge(recent.get("request-7"), 1)
    for _ in range(2):  # a tuple holding tuples is untracked one collection after what it holds
        gc.collect()
    assert [number for number in range(100) if gc.is_tracked(recent.get(f"request-{number}"))] == []


# The HTTP contract


def test_predict_answers_one_text_or_a_batch_naming_variant_and_version(client_for) -> None:
    client = client_for(challenger=False)
    one = client.post("/predict", json={"text": "a moving, beautiful film"})
    assert one.status_code == 200
    body = one.json()
    assert (body["variant"], body["version"]) == ("champion", "v1")
    assert one.headers["x-request-id"] == body["request_id"]
    [prediction] = body["predictions"]
    assert prediction["label"] in LABELS and 1 / len(LABELS) <= prediction["score"] <= 1

    batch = client.post("/predict", json={"texts": ["dull", "great fun", "meh"]}).json()
    assert len(batch["predictions"]) == 3
    assert client.get("/readyz").json() == {"status": "ready", "champion": "v1", "challenger": None}
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 422, "body: Field required"),
        (b"[]", 422, "body: Input should be an object"),
        (b'"a text"', 422, "body: Input should be an object"),
        (b"{}", 422, "exactly one of text"),
        (b'{"text": "a", "texts": ["b"]}', 422, "exactly one of text"),
        (b'{"text": 5}', 422, "text: Input should be a valid string"),
        (b'{"text": ""}', 422, "text: String should have at least 1 character"),
        (b'{"text": null}', 422, "exactly one of text"),
        (b'{"texts": "one string"}', 422, "texts: Input should be a valid array"),
        (b'{"texts": []}', 422, "texts: List should have at least 1 item"),
        (b'{"texts": ["a", "b", "c", "d", "e"]}', 422, "texts: List should have at most 4 items"),
        (b'{"texts": ["ok", 7]}', 422, "texts.1: Input should be a valid string"),
        (b'{"text": "' + b"x" * 51 + b'"}', 422, "text: String should have at most 50 characters"),
        (b'{"text": "a", "colour": "red"}', 422, "colour: Extra inputs are not permitted"),
        (b'{"text": "a", "key": 12}', 422, "key: Input should be a valid string"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message_naming_the_problem(client_for, body, status, message) -> None:
    client = client_for(challenger=False)
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert sample(client.get("/metrics").text, "mlops_requests_total", variant="champion", status=str(status)) == 1


def test_the_challenger_answers_its_share_of_keys_and_the_same_key_always_gets_the_same_variant(client_for) -> None:
    client = client_for(challenger_share=0.5)
    seen = {}
    for number in range(40):
        key = f"user-{number}"
        answers = {
            (body["variant"], body["version"])
            for body in (
                client.post("/predict", json={"text": "fine", "key": key}).json(),
                client.post("/predict", json={"text": "fine"}, headers={"X-User-Id": key}).json(),
            )
        }
        assert len(answers) == 1, f"{key} reached {answers}"
        seen[key] = answers.pop()
    assert set(seen.values()) == {("champion", "v1"), ("challenger", "v2")}
    assert all(variant == route(key, 0.5) for key, (variant, _) in seen.items())
    metrics = client.get("/metrics").text
    assert sample(metrics, "mlops_model_info", variant="challenger", version="v2") == 1
    assert sample(metrics, "mlops_requests_total", variant="challenger", status="200") == 2 * sum(
        variant == "challenger" for variant, _ in seen.values()
    )


def test_feedback_scores_each_variant_and_gives_online_accuracy(client_for) -> None:
    client = client_for(challenger=False)
    answered = [client.post("/predict", json={"text": f"text {n}"}).json() for n in range(4)]
    truths = [answer["predictions"][0]["label"] for answer in answered[:3]]
    wrong = next(label for label in LABELS if label != answered[3]["predictions"][0]["label"])
    for answer, truth in zip(answered, [*truths, wrong], strict=True):
        response = client.post("/feedback", json={"request_id": answer["request_id"], "label": truth})
        assert response.status_code == 200
        [result] = response.json()["results"]
        assert result["variant"] == "champion" and result["correct"] == (truth != wrong)
    metrics = client.get("/metrics").text
    assert sample(metrics, "mlops_online_accuracy", variant="champion") == 0.75
    assert sample(metrics, "mlops_feedback_total", variant="champion", correct="true") == 3
    assert sample(metrics, "mlops_feedback_total", variant="champion", correct="false") == 1

    first = answered[0]["request_id"]
    assert client.post("/feedback", json={"request_id": first, "label": LABELS[0]}).status_code == 409
    assert client.post("/feedback", json={"request_id": "unknown", "label": LABELS[0]}).status_code == 404
    unknown_label = client.post("/feedback", json={"request_id": answered[1]["request_id"], "label": "no such label"})
    assert unknown_label.status_code == 422 and ", ".join(LABELS) in unknown_label.json()["detail"]
    out_of_range = client.post("/feedback", json={"request_id": answered[1]["request_id"], "label": "x", "index": 3})
    assert out_of_range.status_code == 422 and "out of range" in out_of_range.json()["detail"]


def test_feedback_forgets_the_oldest_requests_beyond_its_window(client_for) -> None:
    client = client_for(challenger=False, feedback_window=2)
    ids = [client.post("/predict", json={"text": "x"}).json()["request_id"] for _ in range(3)]
    assert client.post("/feedback", json={"request_id": ids[0], "label": LABELS[0]}).status_code == 404
    assert client.post("/feedback", json={"request_id": ids[2], "label": LABELS[0]}).status_code == 200


def test_shadow_mode_scores_the_challenger_on_a_copy_while_the_champion_answers(client_for) -> None:
    client = client_for(shadow=True, challenger_share=1.0)
    answers = [client.post("/predict", json={"text": "solid", "key": f"user-{n}"}).json() for n in range(10)]
    assert {(answer["variant"], answer["version"]) for answer in answers} == {("champion", "v1")}

    def challenger_scored() -> float:
        return sample(client.get("/metrics").text, "mlops_predictions_total", variant="challenger")

    deadline = time.monotonic() + 30
    while challenger_scored() < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert challenger_scored() == 10
    label = answers[0]["predictions"][0]["label"]
    results = client.post("/feedback", json={"request_id": answers[0]["request_id"], "label": label}).json()["results"]
    assert {(result["variant"], result["version"]) for result in results} == {("champion", "v1"), ("challenger", "v2")}
    metrics = client.get("/metrics").text
    assert sample(metrics, "mlops_requests_total", variant="challenger", status="200") == 10
    assert sample(metrics, "mlops_online_accuracy", variant="champion") == 1.0


def test_metrics_describe_the_models_and_the_traffic(client_for, pipeline_project: Path) -> None:
    client = client_for(challenger=False)
    client.post("/predict", json={"texts": ["abc", "abcdefghijkl"]})
    metrics = client.get("/metrics").text
    assert sample(metrics, "mlops_model_info", variant="champion", version="v1") == 1
    shares = {label: sample(metrics, "mlops_training_label_share", variant="champion", label=label) for label in LABELS}
    trained_on = json.loads((pipeline_project / "evaluate" / "metrics.json").read_text())["samples"]["train"]
    assert shares == {label: pytest.approx(trained_on[label] / trained_on["rows"]) for label in shares}
    assert sample(metrics, "mlops_input_chars_count", variant="champion") == 2
    assert sample(metrics, "mlops_input_chars_sum", variant="champion") == 15
    assert sample(metrics, "mlops_batch_size_sum", variant="champion") == 2
    assert sample(metrics, "mlops_request_latency_seconds_count", variant="champion") == 1
    assert sample(metrics, "mlops_predictions_total", variant="champion") == 2


def test_injected_faults_fail_and_slow_one_variant_and_count_as_errors(client_for) -> None:
    assert (
        client_for(challenger=False)
        .post("/admin/faults", json={"variant": "champion", "error_rate": 1, "delay_ms": 0})
        .status_code
        == 404
    )

    client = client_for(challenger_share=0.5, fault_injection=True)
    fault = {"variant": "challenger", "error_rate": 1.0, "delay_ms": 1}
    assert client.post("/admin/faults", json=fault).status_code == 200
    keys = {
        variant: next(f"user-{n}" for n in range(100) if route(f"user-{n}", 0.5) == variant)
        for variant in ("champion", "challenger")
    }
    failed = client.post("/predict", json={"text": "x", "key": keys["challenger"]})
    assert failed.status_code == 500 and "injected fault" in failed.json()["detail"]
    assert client.post("/predict", json={"text": "x", "key": keys["champion"]}).status_code == 200
    assert client.post("/admin/faults", json={**fault, "error_rate": 0, "delay_ms": 0}).status_code == 200
    assert client.post("/predict", json={"text": "x", "key": keys["challenger"]}).status_code == 200
    metrics = client.get("/metrics").text
    assert sample(metrics, "mlops_requests_total", variant="challenger", status="500") == 1
    assert sample(metrics, "mlops_requests_total", variant="challenger", status="200") == 1
    assert client.post("/admin/faults", json={"variant": "both", "error_rate": 2, "delay_ms": 0}).status_code == 422


def test_a_model_path_that_is_neither_folder_nor_uri_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ServingError, match="neither a model folder nor an MLflow model URI"):
        build_server(params_with(), {"champion": ModelSource(str(tmp_path / "missing"))})
    with pytest.raises(ServingError, match="cannot load"):
        build_server(params_with(), {"champion": ModelSource(str(tmp_path))})


def test_the_challenger_answers_exactly_the_keys_below_its_share() -> None:
    keys = [f"user-{number}" for number in range(1000)]
    challenger_keys = [key for key in keys if route(key, 0.2) == "challenger"]
    assert len(challenger_keys) == 202  # pinned: a share of 0.2 routes 202 of these 1,000 keys
    assert challenger_keys[:8] == ["user-0", "user-8", "user-10", "user-15", "user-16", "user-19", "user-25", "user-27"]


def test_the_app_routes_the_configured_share_not_its_complement(client_for) -> None:
    client = client_for(challenger_share=0.2)
    keys = [f"user-{number}" for number in range(40)]
    variants = {key: client.post("/predict", json={"text": "fine", "key": key}).json()["variant"] for key in keys}
    assert [key for key in keys if variants[key] == "challenger"] == [
        "user-0", "user-8", "user-10", "user-15", "user-16", "user-19", "user-25", "user-27",
    ]  # fmt: skip


def test_feedback_on_a_later_text_of_a_batch_counts_after_another_was_judged(client_for) -> None:
    client = client_for(challenger=False)
    answer = client.post("/predict", json={"texts": ["dull", "great fun", "meh"]}).json()
    predicted = [prediction["label"] for prediction in answer["predictions"]]
    for index in (0, 2):
        response = client.post("/feedback", json={"request_id": answer["request_id"], "label": "fresh", "index": index})
        assert response.status_code == 200, response.text
        [result] = response.json()["results"]
        assert result["predicted"] == predicted[index] and result["correct"] == (predicted[index] == "fresh")
    again = client.post("/feedback", json={"request_id": answer["request_id"], "label": "fresh", "index": 2})
    assert again.status_code == 409
    metrics = client.get("/metrics").text
    assert sample(metrics, "mlops_feedback_total", variant="champion") == 2


def test_a_failing_shadow_challenger_is_counted_and_never_reaches_the_caller(client_for) -> None:
    client = client_for(shadow=True, challenger_share=1.0, fault_injection=True)
    assert (
        client.post("/admin/faults", json={"variant": "challenger", "error_rate": 1, "delay_ms": 0}).status_code == 200
    )
    answers = [client.post("/predict", json={"text": "solid", "key": f"user-{n}"}) for n in range(6)]
    assert {(answer.status_code, answer.json()["variant"]) for answer in answers} == {(200, "champion")}

    def challenger_failures() -> float:
        return sample(client.get("/metrics").text, "mlops_requests_total", variant="challenger", status="500")

    deadline = time.monotonic() + 30
    while challenger_failures() < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    metrics = client.get("/metrics").text
    assert challenger_failures() == 6
    assert sample(metrics, "mlops_requests_total", variant="challenger", status="200") == 0
    assert sample(metrics, "mlops_request_latency_seconds_count", variant="challenger") == 6
    assert sample(metrics, "mlops_predictions_total", variant="challenger") == 0
    assert sample(metrics, "mlops_requests_total", variant="champion", status="200") == 6
    feedback = client.post("/feedback", json={"request_id": answers[0].json()["request_id"], "label": "fresh"})
    assert [result["variant"] for result in feedback.json()["results"]] == ["champion"]


# A broken model never becomes ready


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no tokenizer", "cannot load {broken}: .*tokenizer"),
        ("no classifier head", "refusing {broken}: .*initialised at random"),
        ("NaN weights", "refusing {broken}: .*NaN or infinite probabilities"),
    ],
)
def test_a_model_that_cannot_answer_sanely_is_refused_at_load(
    model_versions: tuple[Path, Path], tmp_path: Path, damage: str, message: str
) -> None:
    broken = broken_copy(model_versions[0], tmp_path / "broken", damage)
    with pytest.raises(ServingError, match=message.format(broken=re.escape(str(broken)))) as refused:
        build_server(params_with(), {"champion": ModelSource(str(broken))})
    assert "\n" not in str(refused.value)


def test_a_challenger_that_fails_the_probe_is_counted_and_left_out(model_versions: tuple[Path, Path], tmp_path) -> None:
    broken = broken_copy(model_versions[1], tmp_path / "broken", "NaN weights")
    sources = {"champion": ModelSource(str(model_versions[0])), "challenger": ModelSource(str(broken))}
    server = build_server(params_with(challenger_share=1.0), sources)
    with TestClient(create_app(server)) as client:
        assert client.get("/readyz").json()["challenger"] is None
        assert client.post("/predict", json={"text": "x"}).json()["variant"] == "champion"
        assert sample(client.get("/metrics").text, "mlops_model_load_failures_total", variant="challenger") == 1


def test_a_model_failing_on_a_request_answers_a_json_500_logs_why_and_counts_it(client_for, caplog) -> None:
    client = client_for(challenger=False)

    async def out_of_memory(texts: list[str]) -> np.ndarray:
        raise RuntimeError("out of memory")

    # A model that passed the load-time probe and then fails: what the server's probe cannot catch.
    client.app.server.pool.get("champion").batcher._score_batch = out_of_memory
    with caplog.at_level(logging.ERROR, logger="mlops.serving.app"):
        failed = client.post("/predict", json={"text": "x"})
    assert failed.status_code == 500 and failed.json() == {
        "detail": "the model failed on this request: see the server's log"
    }
    assert "out of memory" in caplog.text
    assert sample(client.get("/metrics").text, "mlops_requests_total", variant="champion", status="500") == 1


# Admission control


def test_beyond_the_queue_bound_requests_are_refused_with_retry_after_and_counted(client_for) -> None:
    client = client_for(challenger=False, max_queued_texts=4, max_items=4)
    served = client.app.server.pool.get("champion")
    served.batcher.queued = 3  # three texts already waiting
    refused = client.post("/predict", json={"texts": ["a", "b"]})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "serving.max_queued_texts" in refused.json()["detail"]
    served.batcher.queued = 2
    assert client.post("/predict", json={"texts": ["a", "b"]}).status_code == 200
    metrics = client.get("/metrics").text
    assert sample(metrics, "mlops_rejected_requests_total", variant="champion") == 1
    assert sample(metrics, "mlops_requests_total", variant="champion", status="503") == 1
