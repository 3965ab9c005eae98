#!/usr/bin/env bash
# Creates the application roles and databases on the first start of an empty PostgreSQL volume
# (the postgres image runs /docker-entrypoint-initdb.d/* only then). One role per application,
# each owning its database, so Airflow and MLflow cannot touch each other's tables.
#
# Inputs (set by docker/compose.yaml from docker/.env):
#   AIRFLOW_DB_NAME / AIRFLOW_DB_USER / AIRFLOW_DB_PASSWORD   -> Airflow metadata DB
#   MLFLOW_DB_NAME  / MLFLOW_DB_USER  / MLFLOW_DB_PASSWORD    -> MLflow tracking + registry DB
#   MLOPS_DB_NAME   / MLOPS_DB_USER   / MLOPS_DB_PASSWORD     -> prediction log + monitoring history
# Values are passed as psql variables and quoted with format(%I/%L): no SQL injection via .env.
# Idempotent: re-running it against a server that already has the roles/databases changes nothing.
set -euo pipefail

create_app_db() {
    local db="$1" owner="$2" password="$3"
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
        --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
        -v db="$db" -v owner="$owner" -v pw="$password" <<'EOSQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'owner', :'pw')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner')\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')\gexec
EOSQL
    echo "postgres-init: database ${db} owned by ${owner} is ready"
}

create_app_db "${AIRFLOW_DB_NAME:-airflow}" "${AIRFLOW_DB_USER:-airflow}" \
    "${AIRFLOW_DB_PASSWORD:?AIRFLOW_DB_PASSWORD must be set (docker/.env)}"
create_app_db "${MLFLOW_DB_NAME:-mlflow}" "${MLFLOW_DB_USER:-mlflow}" \
    "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD must be set (docker/.env)}"
create_app_db "${MLOPS_DB_NAME:-mlops}" "${MLOPS_DB_USER:-mlops}" \
    "${MLOPS_DB_PASSWORD:?MLOPS_DB_PASSWORD must be set (docker/.env)}"
