# The model server: `mlops serve` answering on port 8000 with the registry's champion (and challenger).
#   docker build -t mlops-serve .
#   docker run -p 8000:8000 -e MLFLOW_TRACKING_URI=http://mlflow.example:5000 mlops-serve
# docker-compose.yml runs two replicas of it behind a load balancer, with MLflow, Prometheus,
# Alertmanager and Grafana.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    TOKENIZERS_PARALLELISM=false \
    OMP_NUM_THREADS=1

WORKDIR /app

# The CPU-only torch wheel first (a few hundred MB instead of several GB with CUDA); keep the version
# in step with torch in requirements.in. Its own layer, so code changes do not re-download it.
ARG TORCH_VERSION=2.13.0
RUN pip install torch==${TORCH_VERSION} --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install . && rm -rf src

# The serving section of params.yaml sets the traffic split, batching and limits; mount another to change them.
COPY params.yaml ./

RUN useradd --create-home --uid 10001 mlops
USER mlops

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["mlops", "serve", "--host", "0.0.0.0", "--port", "8000"]
