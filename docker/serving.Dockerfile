# syntax=docker/dockerfile:1
# Online prediction server of airflow-mlops: `airflow-mlops serve` (FastAPI on uvicorn), docs/serving.md.
# The image the Kubernetes serving target deploys (spec serving.kubernetes.image, docker/k8s/).
#
# Build context: the project root (.dockerignore keeps .local/, .venv/ and secrets out):
#   docker build -f docker/serving.Dockerfile -t airflow-mlops-serving:latest .
# Run against the embedded state of this checkout (SQLite MLflow + Feast registry/online store in .local/):
#   docker run --rm -p 127.0.0.1:8000:8000 -v "$PWD/.local:/var/lib/mlops" --user "$(id -u)" \
#       airflow-mlops-serving:latest serve --model ride_completion --host 0.0.0.0
# Production profile: MLFLOW_TRACKING_URI=http://mlflow:5000, MLOPS_FEAST_ONLINE_STORE=redis://redis:6379/0,
# MLOPS_PREDICTION_LOG_URL=postgresql://... (prediction log table), MLOPS_SERVING_ADMIN_TOKEN (from a secret),
# and MLOPS_HOME on a volume holding the Feast registry (MLOPS_HOME/feast/registry.db, written by the feature DAG).
#
# The serving distribution (serving/pyproject.toml: airflow-mlops-serving) without Airflow, GX or Evidently, from
# requirements/serving.txt: its pins are requirements/lock.txt's (`make lock`), so the server runs exactly the
# versions the project is tested with. Python 3.11: the interpreter the locks are compiled for.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLOPS_PROJECT_DIR=/opt/airflow-mlops \
    MLOPS_HOME=/var/lib/mlops \
    OMP_NUM_THREADS=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    FEAST_USAGE=False \
    GX_ANALYTICS_ENABLED=False \
    AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False \
    SCARF_ANALYTICS=false

WORKDIR /opt/airflow-mlops
# Dependencies first (cached while only include/ changes), then the serving distribution without deps; the specs
# and feature repo come with include/, found through MLOPS_PROJECT_DIR (include/models, include/feature_repo).
# tests/integration/test_serving_without_airflow.py runs these same two installs in a fresh venv.
COPY requirements/serving.txt requirements/serving.txt
RUN pip install --no-deps -r requirements/serving.txt
COPY serving ./serving
COPY include ./include
RUN pip install --no-deps ./serving \
    && python -c "import airflow_mlops.serving.app, feast, mlflow.sklearn, uvicorn" \
    && ! python -c "import airflow" 2>/dev/null \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin mlops \
    && mkdir -p "${MLOPS_HOME}" \
    && chown mlops:mlops "${MLOPS_HOME}"

USER 10001
EXPOSE 8000
# /health answers as soon as the process serves; /ready once a model is loaded (the Kubernetes readiness probe).
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]

ENTRYPOINT ["airflow-mlops"]
# Bind all interfaces inside the container only; publish the port on 127.0.0.1 (or behind a Service) outside.
CMD ["serve", "--model", "ride_completion", "--host", "0.0.0.0", "--port", "8000"]
