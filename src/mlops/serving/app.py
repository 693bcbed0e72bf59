"""The model server: champion and canary challenger behind one FastAPI app, batched, measured, reloadable.

Routes: POST /predict, POST /feedback, GET /healthz, GET /readyz, GET /metrics, POST /admin/reload
and, with fault injection on, POST /admin/faults.
"""

# No `from __future__ import annotations`: FastAPI must see the request class built inside create_app.
import asyncio
import json
import logging
import os
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, NotRequired, Self, TypedDict

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlops.config import Params, ServingParams
from mlops.serving.limits import BodyLimits
from mlops.serving.metrics import Metrics, merge_expositions
from mlops.serving.models import ModelPool, ModelSource
from mlops.serving.router import VARIANTS, Variant, route
from mlops.serving.siblings import Siblings

log = logging.getLogger(__name__)
access_log = logging.getLogger("mlops.serving.access")

USER_KEY_HEADER = "x-user-id"
UNLOGGED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
MAX_KEY_CHARS = 256
JSON_BYTES_PER_CHAR = 12  # the worst case: a character outside the BMP sent as an escaped surrogate pair


class ErrorBody(BaseModel):
    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorBody, "description": description}
    for code, description in {
        400: "The body is not valid JSON.",
        408: "The body did not arrive within serving.read_timeout_seconds (the connection is closed).",
        413: "The body is larger than any valid request (the connection is closed).",
        422: "The body is JSON but not a valid request.",
        500: "The model failed (or a fault was injected).",
    }.items()
}


class Prediction(BaseModel):
    label: str
    score: float


class PredictResponse(BaseModel):
    request_id: str
    variant: Variant
    version: str
    predictions: list[Prediction]


class FeedbackResult(BaseModel):
    variant: Variant
    version: str
    predicted: str
    correct: bool


class FeedbackResponse(BaseModel):
    request_id: str
    label: str
    results: list[FeedbackResult]


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]
    label: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]
    index: Annotated[int, Field(strict=True, ge=0, description="Which text of a batch request the label is for.")] = 0


class FaultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    variant: Variant
    error_rate: Annotated[float, Field(ge=0, le=1)]
    delay_ms: Annotated[float, Field(ge=0, le=60_000)]


def predict_request_model(settings: ServingParams) -> type[BaseModel]:
    """The /predict body, its limits taken from params.yaml (and so shown in the OpenAPI schema)."""
    Text = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=settings.max_text_chars)]

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        text: Text | None = None
        texts: Annotated[list[Text], Field(min_length=1, max_length=settings.max_items)] | None = None
        key: Annotated[
            str | None,
            Field(
                max_length=MAX_KEY_CHARS,
                description="Routing key (a user id): the same key always reaches the same variant. "
                "The X-User-Id header does the same; this field wins when both are given.",
            ),
        ] = None

        @model_validator(mode="after")
        def _one_input(self) -> Self:
            if (self.text is None) == (self.texts is None):
                raise ValueError("give exactly one of text (one string) or texts (a list of strings)")
            return self

        @property
        def inputs(self) -> list[str]:
            return [self.text] if self.texts is None else self.texts

    return PredictRequest


class Record(TypedDict):
    """What one request was told: per variant that scored it, (version, predicted label of each text)."""

    labels: tuple[str, ...]
    judged: tuple[int, ...]  # indexes of the texts that have had feedback
    champion: NotRequired[tuple[str, tuple[str, ...]]]
    challenger: NotRequired[tuple[str, tuple[str, ...]]]


class RecentPredictions:
    """What each recent request was told, so feedback can be scored; the oldest are forgotten first.

    A record is one flat dict of strings and tuples of strings, not dataclasses or nested dicts: the garbage
    collector stops tracking such containers, so a full window (100,000 requests) adds nothing to a full
    collection. As dataclasses, records made each full collection walk the whole window, a pause that grew
    to hundreds of milliseconds under load (the long p99 of issue 15).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, Record] = OrderedDict()

    def add(self, request_id: str, variant: Variant, version: str, predicted: list[str], labels: list[str]) -> None:
        record = self._records.get(request_id)
        if record is None:
            record = self._records[request_id] = Record(labels=tuple(labels), judged=())
            if len(self._records) > self.capacity:
                self._records.popitem(last=False)
        record[variant] = (version, tuple(predicted))

    def get(self, request_id: str) -> Record | None:
        return self._records.get(request_id)

    @staticmethod
    def answers(record: Record) -> dict[Variant, tuple[str, tuple[str, ...]]]:
        return {variant: record[variant] for variant in VARIANTS if variant in record}

    @staticmethod
    def judge(record: Record, index: int) -> None:
        record["judged"] = (*record["judged"], index)


@dataclass(frozen=True)
class Fault:
    error_rate: float
    delay_ms: float


def _describe_validation(errors: Sequence[Any]) -> tuple[int, str]:
    """Status and one-line detail for a body that failed validation (FastAPI's or pydantic's error list)."""
    first = errors[0]
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "parse error")
        return 400, f"the body is not valid JSON ({reason}): send a JSON object"
    location = ".".join(str(part) for part in first["loc"] if part != "body") or "body"
    message = first["msg"].removeprefix("Value error, ")
    more = len(errors) - 1
    return 422, f"{location}: {message}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


class RequestObserver:
    """ASGI middleware: a request id for every request, one JSON access-log line, and the request metrics."""

    def __init__(self, app: ASGIApp, server: "ModelServer") -> None:
        self.app = app
        self.server = server
        self.pid = os.getpid()  # which of the server processes answered (serving/processes.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        headers = dict(scope["headers"])
        key = headers.get(USER_KEY_HEADER.encode(), b"").decode("latin-1")[:MAX_KEY_CHARS] or request_id
        state = scope.setdefault("state", {})
        # variant and version are what answered (for /feedback: what answered the request it judges), so every
        # log line joins the metrics; for_request_id joins a feedback line to its prediction's line.
        state.update(request_id=request_id, variant=self.server.choose(key), version=None, for_request_id=None)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            path = scope["path"]
            if path == "/predict":
                self.server.metrics.answered(state["variant"], status, elapsed)
            if path not in UNLOGGED_PATHS and not self.server.siblings.asking(scope):
                entry = {
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": path,
                    "status": status,
                    "variant": state["variant"] if path == "/predict" or state["for_request_id"] else None,
                    "version": state["version"],
                    "latency_ms": round(elapsed * 1000, 3),
                    "pid": self.pid,
                }
                if state["for_request_id"]:
                    entry["for_request_id"] = state["for_request_id"]
                access_log.info(json.dumps(entry))


class PredictEndpoint:
    """ASGI middleware answering POST /predict in front of FastAPI, whose middleware stack and routing cost more
    CPU a request than the model: 0.17 ms of a core against 0.06 for this path (same pydantic models, no model).

    It validates and serialises with /predict's pydantic models and answers errors as FastAPI's route would.
    """

    def __init__(self, app: ASGIApp, server: "ModelServer", request_model: type[BaseModel]) -> None:
        self.app = app
        self.server = server
        self.request_model = request_model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = None
        try:
            status, answer = await self._answer(scope, receive)
        except HTTPException as error:  # the body's limits (BodyLimits), capacity, a retired variant, a fault
            status, answer, headers = error.status_code, ErrorBody(detail=error.detail), error.headers
        except Exception:
            log.exception("scoring a /predict request failed")
            status, answer = 500, ErrorBody(detail="the model failed on this request: see the server's log")
        response = Response(answer.model_dump_json(), status, headers, media_type="application/json")
        await response(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, BaseModel]:
        body = await Request(scope, receive).body()
        if not body:
            return 422, ErrorBody(detail="body: Field required")
        try:
            request = self.request_model.model_validate_json(body)
        except ValidationError as error:
            status, detail = _describe_validation(error.errors())
            return status, ErrorBody(detail=detail)
        return 200, await self.server.predict(request, scope["state"])


class ModelServer:
    """The state behind the routes: the model pool, the metrics, recent answers and injected faults; what a
    client must see whole across the server processes (feedback, admin calls, metrics) also asks the siblings."""

    def __init__(
        self,
        pool: ModelPool,
        settings: ServingParams,
        metrics: Metrics,
        fault_injection: bool,
        siblings: Siblings | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.metrics = metrics
        self.fault_injection = fault_injection
        self.siblings = siblings or Siblings()
        self.recent = RecentPredictions(settings.feedback_window)
        self.faults: dict[Variant, Fault] = {}
        self.ready = False
        self._background: set[asyncio.Task[None]] = set()

    def choose(self, key: str) -> Variant:
        """The variant that answers: the challenger takes its share of keys unless it only shadows."""
        if self.settings.shadow or self.pool.get("challenger") is None:
            return "champion"
        return route(key, self.settings.challenger_share)

    async def predict(self, body: Any, state: dict[str, Any]) -> PredictResponse:
        """Answer a validated /predict body; ``state`` is the request's, set by RequestObserver."""
        if body.key is not None:
            state["variant"] = self.choose(body.key)
        version, predictions = await self.score(state["request_id"], state["variant"], body.inputs)
        state["version"] = version
        self.shadow(state["request_id"], body.inputs)
        return PredictResponse(
            request_id=state["request_id"], variant=state["variant"], version=version, predictions=predictions
        )

    async def score(self, request_id: str, variant: Variant, texts: list[str]) -> tuple[str, list[Prediction]]:
        """One variant's answer to the texts (version, predictions), recorded for feedback and metrics."""
        fault = self.faults.get(variant)
        if fault is not None:
            await asyncio.sleep(fault.delay_ms / 1000)
            if random.random() < fault.error_rate:
                raise HTTPException(500, f"injected fault: {variant} fails {fault.error_rate:.0%} of requests")
        served = self.pool.get(variant)
        if served is None:  # the challenger was retired while this request waited
            raise HTTPException(503, f"the {variant} is no longer served: retry")
        if served.batcher.queued + len(texts) > self.settings.max_queued_texts:
            self.metrics.rejected.labels(variant=variant).inc()
            raise HTTPException(
                503,
                f"at capacity: {served.batcher.queued} texts are waiting (serving.max_queued_texts): retry shortly",
                {"Retry-After": "1"},
            )
        probabilities = await served.batcher.submit(texts)
        labels = served.model.classifier.labels
        # Whole-array numpy calls: this runs on the event loop.
        predicted = [labels[index] for index in probabilities.argmax(axis=1).tolist()]
        predictions = [
            Prediction(label=label, score=score)
            for label, score in zip(predicted, probabilities.max(axis=1).tolist(), strict=True)
        ]
        self.metrics.scored(variant, texts, predicted)
        self.recent.add(request_id, variant, served.version, predicted, labels)
        return served.version, predictions

    def shadow(self, request_id: str, texts: list[str]) -> None:
        """Score a copy of the request on the challenger in the background; its result is only measured."""
        if not self.settings.shadow or self.pool.get("challenger") is None:
            return
        task = asyncio.get_running_loop().create_task(self._shadow(request_id, texts))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow(self, request_id: str, texts: list[str]) -> None:
        started = time.perf_counter()
        status = 200
        try:
            await self.score(request_id, "challenger", texts)
        except HTTPException as error:
            status = error.status_code
        except Exception:
            status = 500
            log.exception("shadow scoring on the challenger failed")
        self.metrics.answered("challenger", status, time.perf_counter() - started)

    async def feedback(self, body: FeedbackRequest, scope: Scope) -> FeedbackResponse:
        """Score the feedback here, or where the request it judges was answered (another server process)."""
        record = self.recent.get(body.request_id)
        if record is None and not self.siblings.asking(scope):
            answer = await self.siblings.feedback(body.model_dump())
            if answer is not None and answer.is_success:
                return FeedbackResponse.model_validate_json(answer.content)
            if answer is not None:
                raise HTTPException(answer.status_code, answer.json()["detail"])
        if record is None:
            raise HTTPException(
                404,
                f"unknown request_id {body.request_id!r}: not answered here, or older than the last "
                f"{self.recent.capacity} requests (serving.feedback_window)",
            )
        answers = self.recent.answers(record)
        texts = len(next(iter(answers.values()))[1])
        if body.index >= texts:
            raise HTTPException(422, f"index: {body.index} is out of range, request {body.request_id} had {texts}")
        if body.label not in record["labels"]:
            raise HTTPException(
                422, f"label: unknown label {body.label!r}, expected one of {', '.join(record['labels'])}"
            )
        if body.index in record["judged"]:
            raise HTTPException(409, f"feedback for text {body.index} of request {body.request_id} was already given")
        self.recent.judge(record, body.index)
        results = []
        for variant, (version, predicted_labels) in answers.items():
            predicted = predicted_labels[body.index]
            correct = predicted == body.label
            self.metrics.record_feedback(variant, correct)
            results.append(FeedbackResult(variant=variant, version=version, predicted=predicted, correct=correct))
        return FeedbackResponse(request_id=body.request_id, label=body.label, results=results)

    async def exposition(self, scope: Scope) -> bytes:
        """The Prometheus metrics of this process, merged with its siblings' unless a sibling asks."""
        own = generate_latest(self.metrics.registry)
        if self.siblings.asking(scope) or not self.siblings.others:
            return own
        answers = await self.siblings.ask_all("GET", "/metrics")
        return merge_expositions([own.decode(), *(answer.text for answer in answers)])

    async def reload(self, scope: Scope) -> dict[str, dict[str, str | bool | None]]:
        """Re-resolve the registry aliases here and, unless a sibling asks, in every sibling too."""
        siblings = [] if self.siblings.asking(scope) else [self.siblings.ask_all("POST", "/admin/reload")]
        report, *_ = await asyncio.gather(self.pool.refresh(), *siblings)
        return report

    async def inject(self, body: FaultRequest, scope: Scope) -> None:
        """Set (zeros: clear) a variant's injected fault here and, unless a sibling asks, in every sibling."""
        if body.error_rate == 0 and body.delay_ms == 0:
            self.faults.pop(body.variant, None)
        else:
            self.faults[body.variant] = Fault(body.error_rate, body.delay_ms)
        if not self.siblings.asking(scope):
            await self.siblings.ask_all("POST", "/admin/faults", body.model_dump())

    async def poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_seconds)
            try:
                await self.pool.refresh()
            except Exception:  # the next poll may succeed; a dead poller would never notice a moved alias
                log.exception("checking the registry for moved aliases failed")

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.siblings.close()
        await self.pool.close()


def max_body_bytes(settings: ServingParams) -> int:
    """The largest body a valid request can need: every text at its longest, each character JSON-escaped."""
    return settings.max_items * (settings.max_text_chars * JSON_BYTES_PER_CHAR + 4) + 1024


def create_app(server: ModelServer) -> ASGIApp:
    """The server's ASGI app: FastAPI behind POST /predict's own path, the body limits and the request observer."""
    PredictRequest = predict_request_model(server.settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await server.pool.start()
        poller = asyncio.create_task(server.poll()) if server.pool.follows_registry else None
        server.ready = True
        try:
            yield
        finally:
            server.ready = False
            if poller is not None:
                poller.cancel()
            await server.close()

    app = FastAPI(title="mlops model server", version="1", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        status, detail = _describe_validation(error.errors())
        return JSONResponse({"detail": detail}, status_code=status)

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses={
            **ERROR_RESPONSES,
            503: {"model": ErrorBody, "description": "At capacity (retry after Retry-After), or the variant retired."},
        },
    )
    async def predict(body: PredictRequest, request: Request) -> PredictResponse:  # type: ignore[valid-type]
        """Label one text (`text`) or a batch (`texts`); the response names the variant and version that answered."""
        # PredictEndpoint answers POST /predict before routing; this route is its OpenAPI contract.
        return await server.predict(body, request.scope["state"])

    @app.post(
        "/feedback",
        response_model=FeedbackResponse,
        responses={**ERROR_RESPONSES, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}},
    )
    async def feedback(body: FeedbackRequest, request: Request) -> FeedbackResponse:
        """The true label of an answered request: counts towards each variant's online accuracy."""
        response = await server.feedback(body, request.scope)
        # In shadow mode the champion answered and the challenger scored a copy; otherwise one variant answered.
        answered = next((result for result in response.results if result.variant == "champion"), response.results[0])
        request.state.variant, request.state.version = answered.variant, answered.version
        request.state.for_request_id = body.request_id
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz() -> dict[str, str | None]:
        """Readiness: the champion is loaded and the server is not shutting down."""
        champion = server.pool.get("champion")
        if not server.ready or champion is None:
            raise HTTPException(503, "not ready: starting or shutting down")
        challenger = server.pool.get("challenger")
        challenger_version = challenger.version if challenger else None
        return {"status": "ready", "champion": champion.version, "challenger": challenger_version}

    @app.get("/metrics", response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (of every server process)."""
        return Response(await server.exposition(request.scope), media_type=CONTENT_TYPE_LATEST)

    @app.post("/admin/reload")
    async def reload(request: Request) -> dict[str, dict[str, str | bool | None]]:
        """Re-resolve the registry aliases now; a version that fails to load leaves the old one serving."""
        return await server.reload(request.scope)

    if server.fault_injection:

        @app.post("/admin/faults")
        async def faults(body: FaultRequest, request: Request) -> dict[str, float | str]:
            """Make a variant fail at a rate and/or answer late (alert tests); zeros clear it."""
            await server.inject(body, request.scope)
            return body.model_dump()

    predict_first = PredictEndpoint(app, server, PredictRequest)
    limited = BodyLimits(predict_first, max_body_bytes(server.settings), server.settings.read_timeout_seconds)
    return RequestObserver(limited, server)


def model_sources(params: Params, champion: str | None, challenger: str | None) -> dict[Variant, ModelSource]:
    """What to serve: the given models, or the registry's champion and (when set) challenger aliases."""
    name = params.tracking.registered_model
    if champion is None:
        champion_source = ModelSource(f"models:/{name}@champion")
        challenger_source = ModelSource(challenger or f"models:/{name}@challenger", optional=challenger is None)
        return {"champion": champion_source, "challenger": challenger_source}
    sources: dict[Variant, ModelSource] = {"champion": ModelSource(champion)}
    if challenger is not None:
        sources["challenger"] = ModelSource(challenger)
    return sources


def build_server(
    params: Params,
    sources: dict[Variant, ModelSource],
    fault_injection: bool = False,
    siblings: Siblings | None = None,
) -> ModelServer:
    """Load the models (the champion must load) and the state the app serves from."""
    import torch

    from mlops import tracking

    torch.set_num_threads(params.threads)
    if any(":/" in source.uri for source in sources.values()):
        tracking.connect()
    metrics = Metrics()
    pool = ModelPool(sources, metrics, params.serving, params.threads)
    pool.load_initial()
    return ModelServer(pool, params.serving, metrics, fault_injection, siblings)
