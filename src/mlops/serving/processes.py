"""`mlops serve`: several server processes share the port, and a supervisor keeps them together.

One process answers HTTP on one core, and at 32 connections it works in lock-step with its inference
workers: it answers a whole batch and reads the next while the workers wait, then waits while they score.
With serving.server_processes processes, each a whole server (event loop, batcher, inference workers), one
answers while another's batch is scored. Each listens on the port with SO_REUSEPORT, so the kernel spreads
the connections among them; what clients must see whole, they ask each other (serving/siblings.py).

The supervisor starts the processes and, once every one has loaded its models, binds the sockets and hands
each process its own (until then the port refuses connections, as a loading server should). It stops them
all (SIGTERM: each finishes its requests) when it is stopped or when one of them dies: a server missing a
process would answer some clients and not others.
"""

from __future__ import annotations

import functools
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from mlops import logs
from mlops.config import Params
from mlops.errors import MlopsError
from mlops.serving.limits import AddressError
from mlops.serving.siblings import Siblings
from mlops.serving.workers import server_processes

log = logging.getLogger(__name__)

READY = "ready"
BACKLOG = 2048
GRACE_SECONDS = 30  # what a stopping process gives its requests in flight to finish


class ServerProcessError(MlopsError):
    """A server process died: the others are stopped with it."""


def serve(
    params: Params, champion: str | None, challenger: str | None, host: str, port: int, fault_injection: bool
) -> None:
    """Run the server processes until stopped (SIGINT, SIGTERM) or until one of them dies."""
    count = server_processes(params.serving)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or locks
    children: list[tuple[BaseProcess, Connection]] = []
    signal.signal(signal.SIGTERM, _exit)  # stopped while the models load: the `finally` below stops the processes
    with tempfile.TemporaryDirectory(prefix="mlops-serve-") as private:
        sockets = [str(Path(private) / f"{index}.sock") for index in range(count)]
        try:
            for index, own in enumerate(sockets):
                siblings = Siblings(own, [other for other in sockets if other != own])
                ours, theirs = context.Pipe()
                process = context.Process(
                    target=_serve_one,
                    args=(theirs, params, champion, challenger, fault_injection, siblings, logging.root.level),
                    name=f"mlops-serve-{index}",
                )
                process.start()
                theirs.close()
                children.append((process, ours))
            _wait_until_loaded(children)
            for (_, connection), own in zip(children, sockets, strict=True):
                with _shared_listener(host, port) as listener, _private_listener(own) as private_listener:
                    connection.send([listener, private_listener])  # sent as duplicates: ours close on leaving
            log.info("serving on %s:%d with %d server processes", host, port, count)
            _supervise(children)
        finally:
            _stop(children)


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _shared_listener(host: str, port: int) -> socket.socket:
    """A listening socket that the other processes' sockets on the same address share (SO_REUSEPORT).

    The CLI has refused a port another program listens on (check_address binds without SO_REUSEPORT), but
    one may have taken it while the models loaded."""
    family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listener = socket.socket(family, kind, protocol)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        listener.bind(address)
    except OSError as error:
        listener.close()
        raise AddressError(
            f"cannot listen on {host}:{port} ({error.strerror}): choose another --port or --host"
        ) from None
    listener.listen(BACKLOG)
    return listener


def _private_listener(path: str) -> socket.socket:
    """The Unix socket on which one process answers its siblings (listening before any of them may ask)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(BACKLOG)
    return listener


def _wait_until_loaded(children: list[tuple[BaseProcess, Connection]]) -> None:
    """Wait until every process holds its models (or raise the first one's error)."""
    loading = {connection: process for process, connection in children}
    while loading:
        for connection in wait(list(loading)):
            process = loading.pop(connection)  # type: ignore[call-overload]
            try:
                message = connection.recv()  # type: ignore[union-attr]
            except EOFError:
                process.join(5)
                raise ServerProcessError(
                    f"{process.name} exited ({_how(process.exitcode)}) while loading the models: see its log above"
                ) from None
            if message != READY:
                raise MlopsError(message)  # the process's own one-line error, say a champion that cannot load


def _supervise(children: list[tuple[BaseProcess, Connection]]) -> None:
    """Block until stopped by a signal (then stop the processes gracefully) or until a process dies."""
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for process, _ in children:
            process.terminate()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    ended = wait([process.sentinel for process, _ in children])
    if not stopping.is_set():
        # By its sentinel: a process's pipes close a moment before the kernel lets it be waited for.
        process = next(process for process, _ in children if process.sentinel in ended)
        process.join()
        raise ServerProcessError(
            f"{process.name} (pid {process.pid}) exited ({_how(process.exitcode)}): stopped the others; "
            "see its log above"
        )


def _stop(children: list[tuple[BaseProcess, Connection]]) -> None:
    for process, _ in children:
        if process.is_alive():
            process.terminate()
    for process, connection in children:
        process.join(GRACE_SECONDS + 5)
        if process.is_alive():
            process.kill()
            process.join()
        connection.close()


def _how(exitcode: int | None) -> str:
    if exitcode is None:
        return "still running"
    return f"killed by {signal.Signals(-exitcode).name}" if exitcode < 0 else f"exit status {exitcode}"


def _serve_one(
    supervisor: Connection,
    params: Params,
    champion: str | None,
    challenger: str | None,
    fault_injection: bool,
    siblings: Siblings,
    log_level: int,
) -> None:
    """One server process: load the models, say so, and serve on the sockets the supervisor then sends."""
    os.setpgrp()  # a Ctrl-C reaches the supervisor only, which stops every process the same way
    logs.configure(log_level)
    import uvicorn

    from mlops.serving.app import build_server, create_app, model_sources
    from mlops.serving.limits import HeaderDeadlineProtocol

    try:
        server = build_server(params, model_sources(params, champion, challenger), fault_injection, siblings)
    except MlopsError as error:
        supervisor.send(str(error))
        sys.exit(1)
    # What is loaded by now (torch, transformers, MLflow, the models: some 400,000 objects) lives as long as the
    # process. Out of the collector's sight, it no longer makes each full collection a pause of 0.3-0.9 s.
    gc.freeze()
    _log_access_to_stdout()
    try:
        supervisor.send(READY)
        listeners: list[socket.socket] = supervisor.recv()
    except (BrokenPipeError, EOFError):  # the supervisor is gone
        sys.exit(1)
    config = uvicorn.Config(
        create_app(server),
        http=functools.partial(HeaderDeadlineProtocol, header_timeout=params.serving.read_timeout_seconds),
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
    )
    http_server = uvicorn.Server(config)

    def stop_when_orphaned() -> None:
        """A supervisor killed outright cannot stop its processes: each stops when its pipe ends."""
        try:
            supervisor.recv()
        except EOFError:
            http_server.should_exit = True

    threading.Thread(target=stop_when_orphaned, daemon=True).start()
    http_server.run(sockets=listeners)


def _log_access_to_stdout() -> None:
    """One JSON line a request on stdout (app.RequestObserver writes them)."""
    from mlops.serving.app import access_log

    # The line is most of what a request costs the event loop beyond HTTP: skip what it does not print (the
    # caller's frame, thread and process names), as the logging documentation's Optimization section advises.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False
