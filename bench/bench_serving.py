"""Throughput and latency of `mlops serve` against `mlflow models serve` on the same registered model.

Run from a project where `dvc repro` has trained a model (models/run.json and its tracking store):

    python bench/bench_serving.py [--duration 10] [--connections 32 64] [--clients 1 8 32] [--overload 200]

The run's model is registered in a throwaway copy of the sqlite tracking store (the project's own
registry is left alone), and both servers load it from there as models:/NAME@champion. Each is driven by
`wrk` (a C load generator that barely loads the CPU; Debian package wrk) and by closed-loop async Python
clients, one sentence per request. The same run measures the model's batched ceiling: the model alone
scoring batches of serving.max_batch_size in one single-threaded process per core the server may use, just
before and just after each of `mlops serve`'s wrk measurements, while the server idles (the machine's speed
drifts within minutes; each ratio uses the mean of the two around its measurement and prints the range).
`--overload` sends that many connections to `mlops serve` and reports the p99 of the requests it admitted
(the others get 503 beyond serving.max_queued_texts). The framework floor (framework_floor.py: FastAPI with
/predict's request and response and nothing else) is driven by wrk too: what FastAPI's routing alone costs
a request on one core (`mlops serve` answers /predict in front of it).
Prints markdown tables and the ratios.
Timings only mean something on an otherwise idle machine: the bench prints the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE

import aiohttp
import httpx
import numpy as np
import yaml
from mlflow import MlflowClient

from mlops.determinism import KERNEL_PINS

BIN = Path(sys.executable).parent
MODEL_NAME = "bench-serving"
FLOOR = "FastAPI, no model"
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
    client: str
    connections: int
    requests: int
    errors: int
    rps: float
    percentiles_ms: dict[float, float]  # 50, 90, 99, 99.9


PERCENTILES = (50.0, 90.0, 99.0, 99.9)

# wrk sends the sentences in turn and prints its own percentiles (microseconds) and counts when done.
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%(bodies)s}
local sent = 0
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, nil, bodies[(sent %% #bodies) + 1])
end
done = function(summary, latency, requests)
  for _, p in ipairs({%(percentiles)s}) do
    io.write(string.format("percentile %%g %%d\\n", p, latency:percentile(p)))
  end
  local errors = summary.errors
  io.write(string.format("summary %%d %%d %%d\\n", summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.status + errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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


CEILING_SCRIPT = """
import sys, time
import torch
from mlops.serving.models import ModelSource, load
torch.set_num_threads(1)
uri, batch_size = sys.argv[1], int(sys.argv[2])
classifier = load(ModelSource(uri).resolve()).classifier
texts = (%(sentences)r * batch_size)[:batch_size]
classifier.predict_proba(texts)
print("ready", flush=True)
for line in sys.stdin:  # each line: score for that many seconds (every scorer gets it at once), print the rate
    seconds = float(line)
    scored, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        classifier.predict_proba(texts)
        scored += len(texts)
    print(scored / seconds, flush=True)
"""


@contextmanager
def model_ceiling(
    env: dict[str, str], processes: int, batch_size: int, workdir: Path
) -> Iterator[Callable[[float], float]]:
    """Measures texts per second the model alone scores in batches of ``batch_size``, in ``processes`` processes
    of one thread each, all at once. Processes, as the server uses the cores: threads of one process share its
    GIL, and the transformers modules' Python held two threads to 0.6-0.7 of what two processes score. The
    scorers load the model once and idle between measurements."""
    command = [
        *[sys.executable, "-c", CEILING_SCRIPT % {"sentences": SENTENCES}],
        *[f"models:/{MODEL_NAME}@champion", str(batch_size)],
    ]
    logs = [workdir / f"ceiling-{number}.log" for number in range(processes)]
    scorers = []
    for log in logs:
        with log.open("w") as errors:
            scorers.append(subprocess.Popen(command, env=env, stdin=PIPE, stdout=PIPE, stderr=errors, text=True))

    def answers() -> Iterator[str]:
        for scorer, log in zip(scorers, logs, strict=True):
            answer = scorer.stdout.readline().strip()
            if not answer:
                raise SystemExit(f"measuring the model's ceiling failed:\n{log.read_text()[-3000:]}")
            yield answer

    def measure(seconds: float) -> float:
        for scorer in scorers:
            scorer.stdin.write(f"{seconds}\n")
            scorer.stdin.flush()
        return sum(map(float, answers()))

    try:
        list(answers())  # every scorer has loaded the model
        yield measure
    finally:
        for scorer in scorers:
            scorer.kill()
            scorer.wait()


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


def wrk(target: Target, connections: int, duration: float, warmup: float, workdir: Path) -> Result:
    """Closed-loop load from wrk: each connection sends its next request as soon as the previous one is answered."""
    script = workdir / "wrk.lua"
    bodies = ", ".join(f"[[{json.dumps(target.body(sentence))}]]" for sentence in SENTENCES)
    script.write_text(WRK_SCRIPT % {"bodies": bodies, "percentiles": ", ".join(map(str, PERCENTILES))})
    url = target.url + target.path
    threads = str(min(2, connections))
    if round(warmup):  # wrk takes whole seconds
        subprocess.run(["wrk", "-t", threads, "-c", str(connections), "-d", f"{round(warmup)}s", "-s", script, url],
                       capture_output=True, check=True)  # fmt: skip
        time.sleep(1)  # the server still answers the warm-up's last requests after wrk has closed their connections
    output = subprocess.run(
        [
            "wrk",
            "-t",
            threads,
            "-c",
            str(connections),
            "-d",
            f"{round(duration)}s",
            "--timeout",
            "60s",
            "-s",
            script,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    percentiles = {float(p): int(us) / 1000 for p, us in re.findall(r"^percentile (\S+) (\d+)$", output, re.M)}
    requests, duration_us, errors = map(int, re.search(r"^summary (\d+) (\d+) (\d+)$", output, re.M).groups())
    answered = requests - errors
    return Result(target.name, "wrk", connections, answered, errors, answered / (duration_us / 1e6), percentiles)


async def drive(target: Target, clients: int, duration: float, warmup: float) -> Result:
    """Closed-loop load from Python: only successful answers count towards the latencies (the others are errors).

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
                        if response.status == 503:  # admission control: come back as told
                            await asyncio.sleep(float(response.headers.get("retry-after", "1")))

        await asyncio.gather(*(client(number) for number in range(clients)))
    if not latencies:
        raise SystemExit(f"{target.name} answered no request successfully ({errors} errors)")
    measured = np.array(latencies) * 1000
    percentiles = {p: float(np.percentile(measured, p)) for p in PERCENTILES}
    return Result(target.name, "python", clients, len(latencies), errors, len(latencies) / duration, percentiles)


def table(results: list[Result]) -> str:
    lines = [
        "| server | client | connections | answered | errors | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | p99/p50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r.percentiles_ms
        lines.append(
            f"| {r.server} | {r.client} | {r.connections} | {r.requests} | {r.errors} | {r.rps:.0f} | {p[50]:.1f} "
            f"| {p[90]:.1f} | {p[99]:.1f} | {p[99.9]:.1f} | {p[99] / p[50]:.1f} |"
        )
    return "\n".join(lines)


def ratios(results: list[Result], ceilings: dict[int, tuple[float, float]], processes: int) -> str:
    """One line per wrk measurement of mlops serve; ``ceilings`` holds the two around each (by connections)."""
    by_key = {(r.server, r.client, r.connections): r for r in results}
    lines = []
    for (server, client, connections), ours in sorted(by_key.items()):
        if server != "mlops serve" or client != "wrk":
            continue
        before, after = ceilings[connections]
        ceiling = (before + after) / 2
        line = (
            f"wrk, {connections} connections: p99 {ours.percentiles_ms[99] / ours.percentiles_ms[50]:.1f}x p50, "
            f"{ours.rps / ceiling:.2f} of the model's ceiling ({ours.rps / max(before, after):.2f} to "
            f"{ours.rps / min(before, after):.2f}; {before:.0f} texts/s just before, {after:.0f} just after, "
            f"batches of max_batch_size in {processes} processes)"
        )
        theirs = by_key.get(("mlflow models serve", client, connections))
        if theirs:
            line += f", {ours.rps / theirs.rps:.1f}x the requests per second of mlflow models serve"
        floor = by_key.get((FLOOR, client, connections))
        if floor:
            # One event loop: the floor's requests a second on one core give the framework's CPU per request.
            line += f"; {FLOOR}: {floor.rps:.0f} req/s, {1000 / floor.rps:.2f} ms of a core a request"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="Project with a trained model.")
    parser.add_argument("--duration", type=float, default=10.0, help="Measured seconds per server and load.")
    parser.add_argument("--warmup", type=float, default=2.0, help="Unmeasured seconds before each measurement.")
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 64], help="wrk connections.")
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 32], help="Concurrent Python clients.")
    parser.add_argument("--overload", type=int, default=200, help="Python clients against mlops serve alone; 0: none.")
    args = parser.parse_args()
    project = args.project.resolve()
    if not (project / "models" / "run.json").exists() or not (project / "mlflow.db").exists():
        raise SystemExit(f"{project} has no trained model in a sqlite store: run `dvc repro` there first")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: run `make system-deps` (Debian package wrk)")

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-serving-")))
        uri = register(project, workdir)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["tracking"]["registered_model"] = MODEL_NAME
        (workdir / "params.yaml").write_text(yaml.safe_dump(params))
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": str(params["threads"])}
        env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"  # mlflow models serve starts `uvicorn` from PATH
        env.update(HF_HUB_OFFLINE="1", MLFLOW_DISABLE_TELEMETRY="true", TOKENIZERS_PARALLELISM="false")
        for pin in KERNEL_PINS:  # mlops serve runs the kernels torch picks: so must its ceiling, whatever the shell set
            env.pop(pin, None)
        print(f"load average before: {load_average()} ({os.cpu_count()} cores)")
        processes = len(os.sched_getaffinity(0))  # the ceiling uses every core the server may use
        batch_size = params["serving"]["max_batch_size"]
        ceiling_of = stack.enter_context(model_ceiling(env, processes, batch_size, workdir))
        ceiling = ceiling_of(args.duration)
        ceilings: dict[int, tuple[float, float]] = {}  # around each wrk measurement of mlops serve
        ours_port, theirs_port, floor_port = free_port(), free_port(), free_port()
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
            (
                [
                    *[str(BIN / "uvicorn"), "framework_floor:app", "--app-dir", str(Path(__file__).parent)],
                    *["--port", str(floor_port), "--no-access-log", "--log-level", "warning"],
                ],
                Target(FLOOR, f"http://127.0.0.1:{floor_port}", "/predict", lambda text: {"text": text}),
                f"http://127.0.0.1:{floor_port}/readyz",
            ),
        ]
        results = []
        for command, target, health in servers:
            log = workdir / (re.sub(r"\W+", "-", target.name) + ".log")
            with running(command, health, log, env):
                for connections in args.connections:
                    results.append(wrk(target, connections, args.duration, args.warmup, workdir))
                    print(f"measured {target.name} at {connections} wrk connections", file=sys.stderr)
                    if target.name == "mlops serve":
                        after = ceiling_of(args.duration)
                        ceilings[connections], ceiling = (ceiling, after), after
                if target.name == FLOOR:
                    continue
                for clients in args.clients:
                    results.append(asyncio.run(drive(target, clients, args.duration, args.warmup)))
                    print(f"measured {target.name} at {clients} Python clients", file=sys.stderr)
                if args.overload and target.name == "mlops serve":
                    results.append(asyncio.run(drive(target, args.overload, args.duration, args.warmup)))
                    print(f"measured {target.name} at {args.overload} Python clients", file=sys.stderr)
        print(f"load average after: {load_average()}")
    print(table(results))
    print()
    print(ratios(results, ceilings, processes))


if __name__ == "__main__":
    main()
