"""The container images, built and run for real with podman (runc, host network), on a Debian base made
here with debootstrap (no image registry answers on this machine): the model server image serves a
registered model as a non-root user, passes its health check and answers /predict and /metrics; the
MLflow server image runs against a real PostgreSQL. Every package comes from a folder of wheels that the
host's pip downloads (torch's CPU wheel included), mounted into the build.

Building takes minutes: the base image and the wheels are kept between runs on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from conftest import REPO_ROOT, tiny_params, write_params
from monitoring_stack import free_port, wait_for
from needs import need

pytestmark = pytest.mark.heavy

BASE_IMAGE = "localhost/mlops-debian-base:bookworm"
SERVE_IMAGE = "localhost/mlops-serve:test"
MLFLOW_IMAGE = "localhost/mlops-mlflow:test"
CACHE = Path(os.environ.get("MLOPS_IMAGE_CACHE", "/var/tmp/mlops-images"))
PODMAN = ["podman", "--runtime", "runc"]
# podman raises a container's open-file and process limits above what this machine allows unless told.
LIMITS = ["--ulimit", f"nofile={resource.getrlimit(resource.RLIMIT_NOFILE)[0]}", "--ulimit", "nproc=4096:4096"]
MODEL_NAME = "image-model"


def podman(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args[:3])} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def debian_base() -> str:
    """A minimal Debian bookworm with python3 and venv, imported as an image once per machine."""
    for tool in ("podman", "runc", "debootstrap"):
        need(tool)
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    rootfs = CACHE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates", "bookworm", rootfs],
        check=True,
        capture_output=True,
        timeout=1800,
    )
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    subprocess.run([*PODMAN, "import", "-", BASE_IMAGE], stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(rootfs)
    return BASE_IMAGE


@pytest.fixture(scope="session")
def wheels() -> Path:
    """Every wheel the two images install at the versions requirements.txt locks, downloaded by the host's pip
    (which has torch's CPU wheel); the images' own constraints file is made the same way."""
    folder = CACHE / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    # As the Dockerfile makes it: every pinned line of the lock, markers kept, hashes dropped.
    lock = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    locked = [line.removesuffix("\\").strip() for line in lock if "==" in line and not line.lstrip().startswith("#")]
    constraints = folder / "constraints.txt"
    constraints.write_text("".join(f"{line}\n" for line in locked))
    torch = re.search(r"^torch==(\S+)", (REPO_ROOT / "requirements.in").read_text(), re.MULTILINE)[1]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", folder, "--constraint", constraints]
    packages = [f"torch=={torch}", REPO_ROOT, "psycopg2-binary==2.9.13", "boto3==1.44.8"]
    subprocess.run([*command, *packages], check=True, capture_output=True, timeout=1800)
    return folder


def build(image: str, context: Path, base: str, wheels: Path, *build_args: str) -> float:
    """Build ``image`` from ``context`` with every package from ``wheels``; the size in MB."""
    args = ["--build-arg", f"BASE_IMAGE={base}", "--build-arg", "PIP_OPTIONS=--no-index --find-links /wheels"]
    for build_arg in build_args:
        args += ["--build-arg", build_arg]
    podman(
        "build",
        "--format",
        "docker",
        "--network",
        "host",
        "--volume",
        f"{wheels}:/wheels:ro",
        *args,
        "--tag",
        image,
        str(context),
    )
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6


@pytest.fixture(scope="session")
def serve_image(debian_base: str, wheels: Path) -> float:
    return build(SERVE_IMAGE, REPO_ROOT, debian_base, wheels, "TORCH_SOURCE=--no-index --find-links /wheels")


@pytest.fixture(scope="session")
def mlflow_image(debian_base: str, wheels: Path) -> float:
    return build(MLFLOW_IMAGE, REPO_ROOT / "deploy" / "mlflow", debian_base, wheels)


@contextmanager
def container(image: str, *args: str, env: dict[str, str], volumes: list[Path]) -> Iterator[str]:
    name = f"mlops-test-{uuid.uuid4().hex[:8]}"
    mounts = [option for volume in volumes for option in ("--volume", f"{volume}:{volume}")]
    environment = [option for key, value in env.items() for option in ("--env", f"{key}={value}")]
    podman("run", "--detach", "--name", name, "--network", "host", *LIMITS, *mounts, *environment, image, *args)
    try:
        yield name
    finally:
        print(podman("logs", name, check=False).stderr[-2000:])
        podman("rm", "--force", name, check=False)


@pytest.fixture()
def registered_model(pipeline_project: Path, tmp_path: Path) -> str:
    """The trained tiny model registered as champion in a copy of its store that the image's user may write."""
    shutil.copy(pipeline_project / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = json.loads((pipeline_project / "models" / "run.json").read_text())
    logged = client.get_logged_model(run["model_uri"].removeprefix("models:/"))
    model = shutil.copytree(logged.artifact_location.removeprefix("file://"), tmp_path / "model")
    client.create_registered_model(MODEL_NAME)
    version = client.create_model_version(MODEL_NAME, str(model), run["run_id"])
    client.set_registered_model_alias(MODEL_NAME, "champion", version.version)
    for path in (tmp_path, *tmp_path.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o666)
    return uri


def test_the_serving_image_serves_a_registered_model_as_a_non_root_user(
    serve_image: float, registered_model: str, pipeline_project: Path, tmp_path: Path
) -> None:
    port = free_port()
    write_params(tmp_path, tiny_params(tracking={"registered_model": MODEL_NAME}))
    params = tmp_path / "params.yaml"
    params.chmod(0o644)
    started = time.monotonic()
    with container(
        SERVE_IMAGE,
        "sh",
        "-c",
        f'exec mlops serve --host 127.0.0.1 --port "$PORT" --params {params}',
        env={"MLFLOW_TRACKING_URI": registered_model, "PORT": str(port)},
        volumes=[tmp_path],
    ) as name:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _running(name) and _answers(f"{url}/readyz"), 600, "the serving container to be ready")
        ready_after = time.monotonic() - started
        wait_for(lambda: podman("healthcheck", "run", name, check=False).returncode == 0, 120, "its health check")
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"

        answer = httpx.post(f"{url}/predict", json={"texts": ["a quiet, lovely film", "dull"]}, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 2 and all(0 <= item["score"] <= 1 for item in predictions)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert "mlops_requests_total{" in metrics and 'variant="champion"' in metrics
    print(f"\nserving image: {serve_image:.0f} MB, ready {ready_after:.1f} s after `podman run`")


def test_the_mlflow_image_runs_the_registry_on_postgresql(
    mlflow_image: float, postgres_url: str, tmp_path: Path
) -> None:
    port = free_port()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    artifacts.chmod(0o777)
    with container(
        MLFLOW_IMAGE,
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--serve-artifacts",
        "--backend-store-uri",
        postgres_url,
        "--artifacts-destination",
        str(artifacts),
        env={},
        volumes=[artifacts],
    ) as name:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _running(name) and _answers(f"{url}/health"), 300, "the MLflow container")
        client = MlflowClient(tracking_uri=url)
        experiment = client.create_experiment(f"image-{uuid.uuid4().hex[:6]}")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "accuracy", 0.5)
        client.log_text(run.info.run_id, "stored in the artifact volume", "check.txt")
        assert client.get_run(run.info.run_id).data.metrics == {"accuracy": 0.5}
        assert (artifacts / experiment / run.info.run_id / "artifacts" / "check.txt").is_file()
        name = f"image-check-{uuid.uuid4().hex[:6]}"
        with contextlib.suppress(MlflowException):  # a retried request may find it made already
            client.create_registered_model(name)
        assert client.get_registered_model(name).name == name
    print(f"\nMLflow image: {mlflow_image:.0f} MB")


def _running(name: str) -> bool:
    if podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
        pytest.fail(f"container {name} exited:\n{podman('logs', name, check=False).stderr[-3000:]}")
    return True


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
