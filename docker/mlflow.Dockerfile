# syntax=docker/dockerfile:1
# MLflow tracking server for the production profile (docker/compose.yaml, service `mlflow`).
#
# Build context: requirements/ (see compose.yaml), so the only file sent is lock.txt.
# Every package is pinned by requirements/lock.txt, used as a constraints file: the server runs
# exactly the MLflow and psycopg2 the project is tested with, and nothing else floats.
# Python 3.11 matches the interpreter the lock was compiled for (uv pip compile --python-version 3.11).
FROM python:3.11-slim-bookworm

# Must equal the mlflow pin in requirements/lock.txt; if it does not, pip stops with a constraint conflict.
ARG MLFLOW_VERSION=3.17.2

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

COPY lock.txt /tmp/lock.txt
RUN pip install --constraint /tmp/lock.txt "mlflow==${MLFLOW_VERSION}" psycopg2-binary \
    && rm /tmp/lock.txt \
    && python -c "import mlflow, psycopg2; print('mlflow', mlflow.__version__, 'psycopg2', psycopg2.__version__)"

# Unprivileged user; /mlartifacts is created here so a fresh named volume inherits its ownership.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin mlflow \
    && mkdir -p /mlartifacts \
    && chown mlflow:mlflow /mlartifacts
USER 10001
WORKDIR /home/mlflow

EXPOSE 5000
# /health is exempt from MLflow's Host-header check, so the probe works whatever --allowed-hosts says.
HEALTHCHECK --interval=10s --timeout=5s --start-period=90s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)"]

# compose.yaml passes the full `mlflow server ...` command; this default serves a throwaway SQLite store.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1", \
     "--backend-store-uri", "sqlite:////home/mlflow/mlflow.db", "--artifacts-destination", "/mlartifacts"]
