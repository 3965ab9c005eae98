# syntax=docker/dockerfile:1
# Astro Runtime image of airflow-mlops (astro dev start / astro deploy).
#
# Astro Runtime 3.3-8 = Apache Airflow 3.3.2, the version pinned in the locks. The Airflow 3.3 Runtime
# builds ship Python 3.12, 3.13 and 3.14 (3.14 when the tag has no -python-X.Y suffix); none ships 3.11
# (astro-cli's runtime catalog metadata: pythonVersions / defaultPythonVersion per build). The image
# therefore runs Python 3.12 and installs from requirements/lock-py3.12.txt, the lock compiled for 3.12
# (`make lock`); requirements/lock.txt stays the 3.11 lock of the venv. tests/unit/test_astro_project.py
# checks that the tag's Python is the lock's and that both locks pin the same version of every package
# they share.
FROM astrocrpublic.azurecr.io/runtime:3.3-8-python-3.12

# The base image's ONBUILD steps have run at this point, in this order: apt-get install of
# packages.txt (empty), pip install of requirements.txt (comments only: see that file), then
# `COPY --chown=astro:0 . .` of the build context into /usr/local/airflow (see .dockerignore).

# One state directory for all embedded state (ARCHITECTURE.md §2), writable by the astro user.
# Each Airflow component has its own container: `astro dev start` shares this directory through the
# named volume of docker-compose.override.yml; elsewhere use the production profile (PostgreSQL,
# MLflow server, Redis; docker/.env.example) and a shared volume here for the Feast registry and the
# parquet offline store.
ENV MLOPS_HOME=/usr/local/airflow/.local \
    MLOPS_PROJECT_DIR=/usr/local/airflow \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    AIRFLOW__USAGE_DATA_COLLECTION__ENABLED=False \
    FEAST_USAGE=False \
    GX_ANALYTICS_ENABLED=False \
    SCARF_ANALYTICS=false

# requirements/lock-py3.12.txt is the constraints file: only the project's runtime dependencies are
# installed (it has no dev group), each at the exact locked version. The project is installed editable
# from include/, which `astro dev start` mounts, so code edits show without a rebuild.
# Airflow's own pins (apache-airflow==3.3.2, ...) are met by the Runtime's 3.3.2+astro.N builds (a pin
# without a local label matches any local label, PEP 440), so pip leaves Airflow as Astronomer built it;
# the check below fails the build if it did not.
USER root
RUN pip install --no-cache-dir --constraint requirements/lock-py3.12.txt --editable . \
    && python -c "import airflow, airflow_mlops; assert airflow.__version__.startswith('3.3.'), airflow.__version__" \
    && mkdir -p "${MLOPS_HOME}" \
    && chown -R astro:0 "${MLOPS_HOME}"
USER astro
