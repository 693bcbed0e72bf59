"""Which model each variant serves: resolving registry aliases, loading versions, swapping them live."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from mlops.config import ServingParams
from mlops.contract import Classifier
from mlops.errors import MlopsError
from mlops.ml.model import load_classifier
from mlops.serving.batcher import Batcher
from mlops.serving.metrics import Metrics
from mlops.serving.router import Variant
from mlops.serving.workers import InferenceWorkers, InProcessInference, inference_workers

log = logging.getLogger(__name__)

ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)$")


class ServingError(MlopsError):
    """A model to serve cannot be found or loaded."""


@dataclass(frozen=True)
class Target:
    """One concrete model version: where to load it from and how to name it in responses and metrics."""

    load_from: str
    model: str
    version: str


@dataclass(frozen=True)
class LoadedModel:
    classifier: Classifier
    model: str
    version: str


@dataclass(frozen=True)
class ModelSource:
    """What a variant serves: a registry alias (followed as it moves), another MLflow URI, or a folder.

    An optional source whose alias does not exist serves nothing (a challenger is not always there).
    """

    uri: str
    optional: bool = False

    def resolve(self) -> Target | None:
        """The version to serve now; None when an optional alias is not set."""
        folder = Path(self.uri)
        if folder.is_dir():
            return Target(str(folder.resolve()), str(folder.resolve()), folder.resolve().name)
        if ":/" not in self.uri:
            raise ServingError(
                f"{self.uri} is neither a model folder nor an MLflow model URI "
                "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model): fix the path"
            )
        alias = ALIAS_URI.match(self.uri)
        if alias is None:
            pinned = VERSION_URI.match(self.uri)
            if pinned:
                return Target(self.uri, pinned["name"], pinned["version"])
            return Target(self.uri, self.uri, self.uri.rstrip("/").rsplit("/", 1)[-1])
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        name = alias["name"]
        try:
            aliases = MlflowClient().get_registered_model(name).aliases
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise ServingError(f"cannot read {self.uri} from the registry: {_first_line(error)}") from None
            aliases = {}
        version = aliases.get(alias["alias"])
        if version is None:
            if self.optional:
                return None
            raise ServingError(
                f"no version of {name!r} has the alias {alias['alias']!r} in the registry: "
                "register and promote a model first, or pass --champion with a model folder or URI"
            )
        return Target(f"models:/{name}/{version}", name, str(version))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


# Neutral texts (no words of the forker's domain): any text classifier must score them.
PROBE_TEXTS = ["probe", "a longer probe made of several ordinary words, to exercise truncation and padding", "?"]


class _TransformersWarnings(logging.Handler):
    """Collects transformers' warnings while a model loads, keeping its load report and progress bar off stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    @contextmanager
    def capturing(self) -> Iterator[Self]:
        import transformers.utils.logging as transformers_logging

        logger = logging.getLogger("transformers")
        progress_bar = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        transformers_logging.disable_default_handler()
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            transformers_logging.enable_default_handler()
            if progress_bar:
                transformers_logging.enable_progress_bar()


def probe(classifier: Classifier) -> str | None:
    """Why the classifier cannot serve, or None: it must give finite probabilities, one row per text summing to 1."""
    try:
        probabilities = np.asarray(classifier.predict_proba(PROBE_TEXTS))
    except Exception as error:  # whatever breaks here would break every request
        return f"scoring a probe text fails ({_first_line(error)})"
    expected = (len(PROBE_TEXTS), len(classifier.labels))
    if len(classifier.labels) < 2 or probabilities.shape != expected:
        return f"it gives probabilities of shape {probabilities.shape} for {len(classifier.labels)} labels"
    if not np.isfinite(probabilities).all():
        return "it gives NaN or infinite probabilities (broken weights)"
    if (probabilities < 0).any() or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3):
        return "its probabilities are not a distribution over the labels (rows outside [0, 1] or not summing to 1)"
    return None


def load(target: Target) -> LoadedModel:
    """Load a version for inference (the Classifier itself, not the pyfunc DataFrame wrapper) and probe it.

    A version that does not load (no tokenizer) or loads but cannot answer (a classifier head transformers had to
    initialise at random, NaN weights) is refused here, so it never becomes ready or replaces a working version.
    """
    folder = Path(target.load_from)
    with _TransformersWarnings().capturing() as warnings:
        try:
            if folder.is_dir() and not (folder / "MLmodel").exists():
                classifier = load_classifier(folder)
            else:
                import mlflow.pyfunc

                classifier = mlflow.pyfunc.load_model(target.load_from).unwrap_python_model().classifier
        except Exception as error:  # any failure of any loader means the same thing: this version cannot serve
            raise ServingError(f"cannot load {target.load_from}: {_first_line(error)}") from None
    if not isinstance(classifier, Classifier):
        raise ServingError(f"{target.load_from} is not a model of this project (no mlops.contract.Classifier inside)")
    if any("newly initialized" in message for message in warnings.messages):
        problem = "its weights lack tensors that transformers then initialised at random (a classifier head?)"
    else:
        problem = probe(classifier)
    if problem is not None:
        raise ServingError(f"refusing {target.load_from}: {problem}; it cannot serve, fix or re-register the model")
    return LoadedModel(classifier, target.model, target.version)


@dataclass(frozen=True)
class Served:
    """A loaded version with its own workers and batcher: swapping versions never mixes them in a batch."""

    model: LoadedModel
    workers: InferenceWorkers | InProcessInference
    batcher: Batcher

    @property
    def version(self) -> str:
        return self.model.version


class ModelPool:
    """The served version of each variant, reloaded when its alias moves; a failed load keeps the old one."""

    def __init__(
        self, sources: dict[Variant, ModelSource], metrics: Metrics, settings: ServingParams, threads: int
    ) -> None:
        self._sources = sources
        self._metrics = metrics
        self._max_batch_size = settings.max_batch_size
        self._max_wait_seconds = settings.max_batch_wait_ms / 1000
        self._inference_workers = inference_workers(settings)
        self._threads = threads
        self._loaded: dict[Variant, LoadedModel] = {}
        self._served: dict[Variant, Served] = {}
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()

    def load_initial(self) -> None:
        """Load every variant before serving; the champion must load, a challenger may fail (and is counted)."""
        for variant, source in self._sources.items():
            try:
                target = source.resolve()
                if target is not None:
                    self._loaded[variant] = load(target)
            except ServingError as error:
                if variant == "champion":
                    raise
                self._metrics.load_failures.labels(variant=variant).inc()
                log.error("%s not loaded, serving without it: %s", variant, error)

    @property
    def follows_registry(self) -> bool:
        return any(ALIAS_URI.match(source.uri) for source in self._sources.values())

    async def start(self) -> None:
        """Start the workers and the batcher of each loaded model."""
        for variant, loaded in self._loaded.items():
            await self._install(variant, loaded)

    async def close(self) -> None:
        for served in self._served.values():
            await _stop(served)
        self._served.clear()
        if self._retiring:
            await asyncio.gather(*self._retiring)

    def get(self, variant: Variant) -> Served | None:
        return self._served.get(variant)

    async def refresh(self) -> dict[str, dict[str, str | bool | None]]:
        """Re-resolve every source now and swap in versions that changed; one report per variant."""
        async with self._lock:
            return {variant: await self._refresh(variant, source) for variant, source in self._sources.items()}

    async def _refresh(self, variant: Variant, source: ModelSource) -> dict[str, str | bool | None]:
        current = self._served.get(variant)
        current_version = current.version if current else None
        try:
            target = await asyncio.to_thread(source.resolve)
            if target is None:
                if current is not None:
                    log.info("%s alias removed: %s no longer serves version %s", variant, source.uri, current_version)
                    self._uninstall(variant)
                return {"version": None, "changed": current is not None, "error": None}
            if current is not None and (current.model.model, current.version) == (target.model, target.version):
                return {"version": current_version, "changed": False, "error": None}
            loaded = await asyncio.to_thread(load, target)
        except ServingError as error:
            self._metrics.load_failures.labels(variant=variant).inc()
            log.error("%s keeps serving version %s: %s", variant, current_version, error)
            return {"version": current_version, "changed": False, "error": str(error)}
        log.info("%s now serves %s version %s (was %s)", variant, loaded.model, loaded.version, current_version)
        await self._install(variant, loaded)
        return {"version": loaded.version, "changed": True, "error": None}

    async def _install(self, variant: Variant, loaded: LoadedModel) -> None:
        def count_batch(size: int) -> None:
            self._metrics.batch_size.labels(variant=variant).observe(size)

        predict = loaded.classifier.predict_proba
        workers: InferenceWorkers | InProcessInference
        if self._inference_workers:
            workers = InferenceWorkers(predict, self._inference_workers, self._threads)
        else:
            workers = InProcessInference(predict)
        await workers.start()
        batcher = Batcher(
            workers.score, self._max_batch_size, self._max_wait_seconds, count_batch, max(1, self._inference_workers)
        )
        batcher.start()
        previous = self._served.get(variant)
        self._served[variant] = Served(loaded, workers, batcher)
        self._metrics.model_loaded(variant, loaded.model, loaded.version, loaded.classifier.training_label_share)
        if previous is not None:
            self._retire(previous)

    def _uninstall(self, variant: Variant) -> None:
        self._retire(self._served.pop(variant))
        self._metrics.model_unloaded(variant)

    def _retire(self, served: Served) -> None:
        """Let the old version finish the requests it already took, without holding up new ones."""
        task = asyncio.get_running_loop().create_task(_stop(served))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


async def _stop(served: Served) -> None:
    """Answer what the version's batcher already took, then stop its workers."""
    await served.batcher.close()
    await served.workers.close()
