"""Real servers for the tests: a throwaway PostgreSQL cluster and an `mlflow server` backed by it.

Context managers start and stop them; the session fixtures ``postgres_url`` and ``mlflow_server`` (made
available to every test by tests/conftest.py) start each once per test session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest

from needs import need

BIN = Path(sys.executable).parent
POSTGRES_USER = "postgres"


def sqlite_registry(folder: Path) -> str:
    """A tracking URI for a fresh, real MLflow sqlite store in ``folder``, ready in a fraction of a second.

    Creating the tables takes MLflow seconds, so the first call per MLflow version builds an empty store in
    the system temp dir and every call copies it (what makes registry unit tests fast enough to run per mutant).
    """
    import mlflow
    from mlflow import MlflowClient

    template = Path(tempfile.gettempdir()) / f"mlops-tests-empty-mlflow-{mlflow.__version__}.db"
    if not template.exists():
        building = template.with_suffix(f".{os.getpid()}.db")
        MlflowClient(f"sqlite:///{building}").search_experiments()  # creates and migrates the tables
        building.replace(template)  # atomic: a concurrent run sees no file or a whole one
    shutil.copy(template, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin(program: str) -> Path:
    """A PostgreSQL server program from the Debian package (newest major version installed)."""
    return Path(need("postgresql")) / program


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: drop to the postgres user when we are root."""
    return ["runuser", "-u", POSTGRES_USER, "--", *command] if os.geteuid() == 0 else command


def _wait_until(ready, what: str, timeout: float, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            break
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.2)
    detail = log.read_text()[-3000:] if log and log.exists() else ""
    pytest.fail(f"{what} did not become ready in {timeout:.0f} s\n{detail}")


@contextlib.contextmanager
def postgres(database: str = "mlflow") -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 and a free port with one empty database; yields its URL.

    The cluster lives in a directory under the system temp dir (the postgres user must be able to reach it)
    and is deleted afterwards.
    """
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, user=POSTGRES_USER)
    data, log = root / "data", root / "postgres.log"
    port = free_port()
    pg_ctl = str(postgres_bin("pg_ctl"))
    try:
        subprocess.run(
            _as_postgres([str(postgres_bin("initdb")), "-D", str(data), "-U", POSTGRES_USER, "--auth=trust"]),
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"]),
            check=True,
            capture_output=True,
        )
        admin = psycopg2.connect(host="127.0.0.1", port=port, user=POSTGRES_USER, dbname="postgres")
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        admin.close()
        yield f"postgresql+psycopg2://{POSTGRES_USER}@127.0.0.1:{port}/{database}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _healthy(url: str) -> bool:
    return httpx.get(f"{url}/health", timeout=2).status_code == 200


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 and a free port with proxied artifacts in ``artifacts``; yields its URL."""
    port = free_port()
    log = artifacts.parent / f"mlflow-server-{port}.log"
    command = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until(lambda: _healthy(url), "mlflow server", 120, process, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)  # the server runs uvicorn workers in its own process group
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL database for the whole session."""
    with postgres() as url:
        yield url


@pytest.fixture(scope="session")
def mlflow_server_url(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` with a PostgreSQL backend store and proxied artifacts, for the whole session."""
    with mlflow_server(postgres_url, tmp_path_factory.mktemp("mlflow-artifacts")) as url:
        yield url
