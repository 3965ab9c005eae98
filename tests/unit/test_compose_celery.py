"""docker/compose.yaml's CeleryExecutor profile, checked structurally (no Docker engine here).

YAML anchors and merge keys are resolved as Compose resolves them (PyYAML's safe_load does both).
What a running Compose would add — image build, health checks passing, workers consuming — is not
checked here; tests/stack/test_celery_stack.py runs the same components as processes instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT / "docker" / "compose.yaml"
SERVERS = {"postgres", "redis", "mlflow"}
AIRFLOW = {
    "airflow-api-server": ["airflow", "api-server"],
    "airflow-scheduler": ["airflow", "scheduler"],
    "airflow-dag-processor": ["airflow", "dag-processor"],
    "airflow-triggerer": ["airflow", "triggerer"],
    "airflow-worker-default": ["airflow", "celery", "worker", "--queues", "default"],
    "airflow-worker-training": ["airflow", "celery", "worker", "--queues", "training", "--concurrency", "1"],
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def mlops_home_of_the_image() -> str:
    match = re.search(r"MLOPS_HOME=(\S+)", (PROJECT / "Dockerfile").read_text())
    assert match, "the root Dockerfile sets MLOPS_HOME"
    return match.group(1)


def test_the_airflow_services_run_this_project_s_image_on_celery(compose: dict[str, Any]) -> None:
    services, home = compose["services"], mlops_home_of_the_image()
    assert set(services) == SERVERS | set(AIRFLOW) | {"airflow-init"}
    for name, command in AIRFLOW.items():
        service = services[name]
        assert service["command"] == command, name
        assert service["image"] == "airflow-mlops:latest" and service["build"] == {"context": "..",
                                                                                  "dockerfile": "Dockerfile"}
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-api-server:8080/execution/"
        assert f"mlops-home:{home}" in service["volumes"], f"{name}: one state directory for every component"
        assert service["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}
    assert services["airflow-init"]["command"] == ["airflow", "db", "migrate"]
    assert "mlops-home" in compose["volumes"]


def test_the_broker_has_its_own_redis_database(compose: dict[str, Any]) -> None:
    env = compose["services"]["airflow-scheduler"]["environment"]
    broker, online = env["AIRFLOW__CELERY__BROKER_URL"], env["MLOPS_FEAST_ONLINE_STORE"]
    assert broker.startswith("redis://redis:6379/") and online == "redis://redis:6379/0"
    assert broker.rsplit("/", 1)[1] == "${AIRFLOW_CELERY_BROKER_DB:-1}"


def test_without_the_profile_only_the_servers_start(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert all("profiles" not in services[name] for name in SERVERS)
    assert all(services[name]["profiles"] == ["airflow"] for name in [*AIRFLOW, "airflow-init"])


def test_every_dependency_and_variable_is_defined(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
    example = (PROJECT / "docker" / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE.read_text()))  # $${X}: the container's own
    assert used <= defined, f"docker/.env.example lacks {sorted(used - defined)}"
