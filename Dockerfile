# The model server: `mlops serve` answering on port 8000 with the registry's champion (and challenger).
#   docker build -t mlops-serve .
#   docker run -p 8000:8000 -e MLFLOW_TRACKING_URI=http://mlflow.example:5000 mlops-serve
# docker-compose.yml runs two replicas of it behind a load balancer, with MLflow, Prometheus,
# Alertmanager and Grafana; deploy/k8s runs it on Kubernetes.
#
# BASE_IMAGE: any Debian-based image with python3 (3.11 or newer) and its venv module. The tests build on
# a Debian base made with debootstrap, since no image registry answers there.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false \
    OMP_NUM_THREADS=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /app
RUN python3 -m venv /opt/venv

# The CPU-only torch wheel first (a few hundred MB instead of several GB with CUDA), in its own layer so
# code changes do not download it again. Keep TORCH_VERSION in step with torch in requirements.in.
# TORCH_SOURCE says where the wheel comes from, PIP_OPTIONS where the other packages come from (the tests
# point both at a mounted folder of wheels: --no-index --find-links /wheels).
ARG TORCH_VERSION=2.13.0
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"
ARG PIP_OPTIONS=""
RUN pip install ${PIP_OPTIONS} torch==${TORCH_VERSION} ${TORCH_SOURCE}

# The project at the versions requirements.txt locks, without the dev tools that the lock also holds (pip
# cannot take hashes in a constraints file, so they are dropped here: the versions still match the lock).
COPY pyproject.toml README.md LICENSE requirements.txt ./
COPY src ./src
RUN sed -e '/^ *--hash/d' -e 's/ *\\$//' requirements.txt | grep -v '^-e' > /tmp/constraints.txt \
    && pip install ${PIP_OPTIONS} --constraint /tmp/constraints.txt . && rm -rf src /tmp/constraints.txt

# The serving section of params.yaml sets the traffic split, batching and limits; mount another to change them.
COPY params.yaml ./

RUN useradd --create-home --uid 10001 mlops
USER mlops

# PORT: where the server listens (the health check follows it).
ENV PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['PORT']}/healthz\", timeout=2)"]
CMD ["sh", "-c", "exec mlops serve --host 0.0.0.0 --port \"$PORT\""]
