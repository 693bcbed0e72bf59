"""Inference in worker processes: each holds its own copy of the model and its own interpreter lock.

In one process the model's Python (the tokenizer wrapper, the module calls between short torch ops) and the
event loop take turns on the interpreter lock: two threads of one process scored 1.15-1.2 times what one
thread scores, two processes 1.75-1.9 times. Worker processes score batches on every core while the event loop
answers HTTP. The loop talks to each worker over a pipe it watches with add_reader: no thread of the server
waits on them.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import pickle
import signal
from collections.abc import Callable
from multiprocessing.connection import Connection

import joblib
import numpy as np

from mlops.config import ServingParams

Predict = Callable[[list[str]], np.ndarray]

# A forkserver, not fork: the server's process holds threads (OpenMP's among them) that a forked child would
# inherit in an unknown state. The forkserver imports the model's libraries once; each worker forks from it.
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["mlops.ml.model"])


def server_processes(settings: ServingParams) -> int:
    """Processes answering HTTP (serving/processes.py): serving.server_processes, or one per CPU this process
    may use (its affinity and a container's CPU quota, as joblib counts them: not the node's cores)."""
    return settings.server_processes or joblib.cpu_count()


def inference_workers(settings: ServingParams) -> int:
    """Worker processes per served version in each server process (0: it scores batches itself):
    serving.inference_workers, or 0 when there is a server process per CPU, else the CPUs each may use.

    With a server process per CPU, each is one busy task for its CPU: its batches cost it no pipe, pickling
    or second process to schedule, and at 32 connections on 2 CPUs it answered about 10% more requests a
    second than with a worker process each (and as many at 64)."""
    if settings.inference_workers is not None:
        return settings.inference_workers
    cpus, processes = joblib.cpu_count(), server_processes(settings)
    return 0 if processes >= cpus else cpus // processes


class InferenceError(RuntimeError):
    """The model failed on a batch, or its worker process died."""


def _work(connection: Connection, pickled_predict: bytes, threads: int) -> None:
    """A worker's life: score each batch the server sends until the server closes the pipe."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the server decides
    torch.set_num_threads(threads)
    predict: Predict = pickle.loads(pickled_predict)
    connection.send((True, None))
    while True:
        try:
            texts = connection.recv()
        except EOFError:
            return
        try:
            reply = (True, predict(texts))
        except Exception as error:  # the server reports it on each request of the batch; the worker goes on
            reply = (False, f"{type(error).__name__}: {error}")
        connection.send(reply)


class _Worker:
    def __init__(self, pickled_predict: bytes, threads: int) -> None:
        self._connection, child_end = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(target=_work, args=(child_end, pickled_predict, threads), daemon=True)
        self.process.start()
        child_end.close()

    @property
    def alive(self) -> bool:
        """Able to take a batch. Between batches nothing is sent to the server: a pipe with something to read
        has reached its end, which the kernel marks the moment the process dies."""
        return not self._connection.closed and not self._connection.poll()

    async def _reply(self) -> object:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[tuple[bool, object]] = loop.create_future()

        def read() -> None:
            try:
                reply.set_result(self._connection.recv())
            except (EOFError, OSError):
                reply.set_result((False, None))

        descriptor = self._connection.fileno()
        loop.add_reader(descriptor, read)
        try:
            succeeded, result = await reply
        except BaseException:  # cancelled: the reply would reach the next batch, so this worker is done
            self._connection.close()
            raise
        finally:
            loop.remove_reader(descriptor)
        if result is None and not succeeded:
            self._connection.close()
            raise self._died()
        if not succeeded:
            raise InferenceError(str(result))
        return result

    def _died(self) -> InferenceError:
        # The exit code is not read here: the forkserver may not have reported it yet when the pipe ends.
        return InferenceError(f"the inference worker (pid {self.process.pid}) died")

    async def ready(self) -> None:
        await self._reply()

    async def score(self, texts: list[str]) -> np.ndarray:
        try:
            self._connection.send(texts)
        except OSError as error:
            self._connection.close()
            raise self._died() from error
        return await self._reply()  # type: ignore[return-value]

    async def close(self) -> None:
        self._connection.close()  # the worker reads the end of the pipe and returns
        await asyncio.to_thread(self.process.join, 10)
        if self.process.exitcode is None:
            self.process.kill()


class InferenceWorkers:
    """``processes`` worker processes scoring batches with ``predict``; a worker that dies is replaced."""

    def __init__(self, predict: Predict, processes: int, threads: int) -> None:
        self._pickled_predict = pickle.dumps(predict)
        self._threads = threads
        self._processes = processes
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._workers: set[_Worker] = set()

    async def start(self) -> None:
        """Start every worker and wait until each holds the model."""
        for worker in await asyncio.gather(*(self._spawn() for _ in range(self._processes))):
            self._idle.put_nowait(worker)

    async def _spawn(self) -> _Worker:
        worker = _Worker(self._pickled_predict, self._threads)
        self._workers.add(worker)
        try:
            await worker.ready()
        except BaseException:
            self._workers.discard(worker)
            raise
        return worker

    async def score(self, texts: list[str]) -> np.ndarray:
        """Class probabilities for ``texts`` from the first idle worker, replaced first if it has died (on an
        earlier batch or while idle): a dead worker goes back to the idle ones, so no slot is ever lost."""
        worker = await self._idle.get()
        try:
            if not worker.alive:
                replacement = await self._spawn()
                self._workers.discard(worker)
                await worker.close()
                worker = replacement
            return await worker.score(texts)
        finally:
            self._idle.put_nowait(worker)

    @property
    def pids(self) -> list[int]:
        return sorted(worker.process.pid for worker in self._workers if worker.process.pid is not None)

    async def close(self) -> None:
        await asyncio.gather(*(worker.close() for worker in self._workers))
        self._workers.clear()


class InProcessInference:
    """Batches scored by the server process itself, on its event loop (inference_workers 0): the loop answers
    nothing else while it scores one, a few milliseconds."""

    def __init__(self, predict: Predict) -> None:
        self._predict = predict

    async def start(self) -> None:
        pass

    async def score(self, texts: list[str]) -> np.ndarray:
        return self._predict(texts)

    async def close(self) -> None:
        pass
