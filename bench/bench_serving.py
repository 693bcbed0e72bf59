"""Throughput and latency of `mlops serve` against `mlflow models serve` on the same registered model.

Run from a project where `dvc repro` has trained a model (models/run.json and its tracking store):

    python bench/bench_serving.py [--duration 10] [--clients 1 8 32]

The run's model is registered in a throwaway copy of the sqlite tracking store (the project's own
registry is left alone), both servers load it from there as models:/NAME@champion, and each is driven
by closed-loop async clients sending one sentence per request. Prints a markdown table and the ratios.
Timings only mean something on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import yaml
from mlflow import MlflowClient

BIN = Path(sys.executable).parent
MODEL_NAME = "bench-serving"
SENTENCES = [
    "A tender, funny and beautifully acted film.",
    "The plot is a mess and the jokes never land.",
    "An ambitious story that loses its way in the second half.",
    "I could watch these two actors for hours.",
    "Two hours of my life I will never get back.",
    "Quietly devastating, with a score that lingers.",
    "Predictable, loud and far too long.",
    "A smart, brisk thriller that trusts its audience.",
]


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    path: str
    body: Callable[[str], dict]


@dataclass(frozen=True)
class Result:
    server: str
    clients: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def register(project: Path, workdir: Path) -> str:
    """Register the project's trained run as NAME@champion in a copy of its sqlite store; returns the store URI."""
    shutil.copy(project / "mlflow.db", workdir / "mlflow.db")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    run = json.loads((project / "models" / "run.json").read_text())
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    logged = client.get_logged_model(run["model_uri"].removeprefix("models:/"))
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(
        MODEL_NAME, logged.artifact_location, run_id=run["run_id"], model_id=logged.model_id
    ).version
    client.set_registered_model_alias(MODEL_NAME, "champion", version)
    return uri


@contextmanager
def running(command: list[str], health_url: str, log: Path, env: dict[str, str]) -> Iterator[None]:
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"{command[0]} exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(health_url).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit(f"{' '.join(command)} did not become ready:\n{log.read_text()[-3000:]}")
        yield
    finally:
        process.terminate()
        process.wait(timeout=60)


async def drive(target: Target, clients: int, duration: float, warmup: float) -> Result:
    """Closed-loop load: each client sends its next request as soon as the previous one is answered.

    aiohttp rather than httpx: httpx's own CPU cost caps a 2-core machine near 100 requests per second.
    """
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(target.url, connector=connector, timeout=timeout) as http:
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from, stop_at = start + warmup, start + warmup + duration

        async def client(number: int) -> None:
            nonlocal errors
            sent = number
            while (now := loop.time()) < stop_at:
                async with http.post(target.path, json=target.body(SENTENCES[sent % len(SENTENCES)])) as response:
                    await response.read()
                sent += 1
                if now >= measure_from:
                    if response.status == 200:
                        latencies.append(loop.time() - now)
                    else:
                        errors += 1

        await asyncio.gather(*(client(number) for number in range(clients)))
    if not latencies:
        raise SystemExit(f"{target.name} answered no request successfully ({errors} errors)")
    measured = np.array(latencies) * 1000
    return Result(
        target.name,
        clients,
        len(latencies),
        errors,
        len(latencies) / duration,
        float(np.percentile(measured, 50)),
        float(np.percentile(measured, 99)),
    )


def table(results: list[Result]) -> str:
    lines = [
        "| server | clients | requests | errors | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r.server} | {r.clients} | {r.requests} | {r.errors} | {r.rps:.0f} | {r.p50_ms:.1f} | {r.p99_ms:.1f} |"
        for r in results
    ]
    return "\n".join(lines)


def ratios(results: list[Result]) -> str:
    by_key = {(r.server, r.clients): r for r in results}
    lines = []
    for clients in sorted({r.clients for r in results}):
        ours, theirs = by_key[("mlops serve", clients)], by_key[("mlflow models serve", clients)]
        lines.append(
            f"{clients:>2} clients: {ours.rps / theirs.rps:.1f}x the requests per second, "
            f"p50 {ours.p50_ms / theirs.p50_ms:.2f}x, p99 {ours.p99_ms / theirs.p99_ms:.2f}x of mlflow models serve"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="Project with a trained model.")
    parser.add_argument("--duration", type=float, default=10.0, help="Measured seconds per server and load.")
    parser.add_argument("--warmup", type=float, default=2.0, help="Unmeasured seconds before each measurement.")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="Concurrent clients.")
    args = parser.parse_args()
    project = args.project.resolve()
    if not (project / "models" / "run.json").exists() or not (project / "mlflow.db").exists():
        raise SystemExit(f"{project} has no trained model in a sqlite store: run `dvc repro` there first")

    with tempfile.TemporaryDirectory(prefix="bench-serving-") as temporary:
        workdir = Path(temporary)
        uri = register(project, workdir)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["tracking"]["registered_model"] = MODEL_NAME
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": str(params["threads"])}
        env.update(HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true", TOKENIZERS_PARALLELISM="false")
        ours_port, theirs_port = free_port(), free_port()
        servers = [
            (
                [str(BIN / "mlops"), "serve", "--params", "params.yaml", "--port", str(ours_port)],
                Target("mlops serve", f"http://127.0.0.1:{ours_port}", "/predict", lambda text: {"text": text}),
                f"http://127.0.0.1:{ours_port}/readyz",
            ),
            (
                [
                    *[str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL_NAME}@champion"],
                    *["--env-manager", "local", "--host", "127.0.0.1", "--port", str(theirs_port)],
                ],
                Target(
                    "mlflow models serve",
                    f"http://127.0.0.1:{theirs_port}",
                    "/invocations",
                    lambda text: {"dataframe_records": [{"text": text}]},
                ),
                f"http://127.0.0.1:{theirs_port}/ping",
            ),
        ]
        results = []
        for command, target, health in servers:
            with running(command, health, workdir / f"{target.name.split()[0]}.log", env):
                for clients in args.clients:
                    results.append(asyncio.run(drive(target, clients, args.duration, args.warmup)))
                    print(f"measured {target.name} at {clients} clients", file=sys.stderr)
    print(table(results))
    print()
    print(ratios(results))


if __name__ == "__main__":
    main()
