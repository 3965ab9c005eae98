"""The Astro CLI project: what `astro dev init` lays out, .astro/config.yaml, airflow_settings.yaml and
docker-compose.override.yml, checked against the CLI's own rules (tests/support/astro_cli.py, transcribed
from astronomer/astro-cli with the commit of each file)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import astro_cli

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
SETTINGS = PROJECT / "airflow_settings.yaml"

# What `astro dev init` writes that this project deliberately does not have, and what stands in for it.
NOT_APPLICABLE = {
    ".env": "secrets stay out of git (.gitignore); the CLI skips a missing env file; docker/.env.example and "
            "README 'Run with the Astro CLI' list the variables",
    "dags/exampledag.py": "example DAG; every DAG here is generated from include/models/*.yaml",
    "tests/dags/test_dag_example.py": "tests/dags/test_dag_integrity.py is this project's DAG test",
}


def _settings() -> dict[str, Any]:
    return yaml.safe_load(SETTINGS.read_text())


def _flat_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        path = f"{prefix}{key}"
        keys |= _flat_keys(value, f"{path}.") if isinstance(value, dict) else {path}
    return keys


def _dockerfile_env(name: str) -> str:
    match = re.search(rf"\b{name}=(\S+)", (PROJECT / "Dockerfile").read_text())
    assert match, f"Dockerfile: no ENV {name}"
    return match.group(1)


def test_everything_astro_dev_init_lays_out_is_here_or_replaced() -> None:
    missing = [f for f in astro_cli.INIT_FILES if f not in NOT_APPLICABLE and not (PROJECT / f).is_file()]
    missing += [d for d in astro_cli.INIT_DIRS if not (PROJECT / d).is_dir()]
    assert not missing, f"missing Astro project files (astro dev init writes them): {missing}"
    assert set(NOT_APPLICABLE) <= set(astro_cli.INIT_FILES)
    assert (PROJECT / "tests/dags/test_dag_integrity.py").is_file()
    exempt = (PROJECT / ".astro/dag_integrity_exceptions.txt").read_text().splitlines()
    assert exempt == [astro_cli.EXCEPTIONS_TEMPLATE], ".astro/dag_integrity_exceptions.txt must exempt no DAG file"


def test_project_config_holds_only_keys_the_cli_knows() -> None:
    config = yaml.safe_load((PROJECT / ".astro/config.yaml").read_text())
    unknown = _flat_keys(config) - astro_cli.CONFIG_KEYS
    assert not unknown, f".astro/config.yaml: keys the Astro CLI does not know: {sorted(unknown)}"
    name = config["project"]["name"]
    assert all(rule.match(name) for rule in astro_cli.PROJECT_NAME_RULES), f"project.name {name!r}"


def test_cli_metadata_db_does_not_take_the_production_postgres_port() -> None:
    """The CLI publishes its own PostgreSQL on 127.0.0.1:<postgres.port>; docker/compose.yaml publishes ours."""
    astro_port = int(yaml.safe_load((PROJECT / ".astro/config.yaml").read_text())["postgres"]["port"])
    compose = (PROJECT / "docker/compose.yaml").read_text()
    ours = int(re.search(r"127\.0\.0\.1:\$\{POSTGRES_PORT:-(\d+)\}:5432", compose).group(1))
    assert astro_port != ours
    [postgres] = [c for c in _settings()["airflow"]["connections"] if c["conn_id"] == "postgres_default"]
    assert postgres["conn_port"] == ours


def test_dockerignore_covers_the_cli_template_and_keeps_what_the_image_needs() -> None:
    lines = {line.strip().rstrip("/") for line in (PROJECT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert {entry.rstrip("/") for entry in astro_cli.DOCKERIGNORE_TEMPLATE} <= lines
    needed = {".astro", "tests", "dags", "include", "plugins", "requirements", "pyproject.toml", "README.md"}
    assert not needed & lines, f".dockerignore excludes what the image needs: {sorted(needed & lines)}"


def test_requirements_txt_and_packages_txt_pin_nothing() -> None:
    """The ONBUILD steps install them before the project is copied: the lock is the only source of pins."""
    for name in ("requirements.txt", "packages.txt"):
        entries = [line for line in (PROJECT / name).read_text().splitlines()
                   if line.strip() and not line.lstrip().startswith("#")]
        assert entries == [], f"{name}: {entries}"


def test_settings_file_uses_only_fields_the_cli_reads() -> None:
    assert astro_cli.settings_errors(_settings()) == []


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda c: c.update(conn_description="x"), "conn_description: not a field the CLI reads"),
    (lambda c: c.update(conn_port="5432"), "conn_port: must be int"),
    (lambda c: c.update(conn_extra={"db": 0}), "conn_extra.db: value 0 is not a string"),
    (lambda c: c.update(conn_extra=["a"]), "conn_extra: must be a mapping"),
    (lambda c: c.update(conn_password="it's"), "conn_password: contains a single quote"),
    (lambda c: c.update(conn_type=None), "set conn_type or conn_uri"),
    (lambda c: c.update(conn_uri="postgres://h/db"), "conn_uri is ignored"),
], ids=["unknown-field", "port-string", "extra-int", "extra-list", "quote", "no-type", "uri-and-fields"])
def test_settings_check_names_each_mistake(edit, expected: str) -> None:
    data = _settings()
    edit(data["airflow"]["connections"][0])
    errors = astro_cli.settings_errors(data)
    assert any(expected in e and e.startswith("connections[0]") for e in errors), errors


def test_settings_check_rejects_unread_sections_and_skipped_pools() -> None:
    errors = astro_cli.settings_errors({"airflow": {"connection": [], "pools": [{"pool_name": "p"}]}})
    assert any("airflow.connection: not read" in e for e in errors), errors
    assert any("pools[0]: pool_slot must be a positive integer" in e for e in errors), errors


def test_feast_repo_path_is_the_projects_feature_repo_inside_the_image() -> None:
    [feast] = [c for c in _settings()["airflow"]["connections"] if c["conn_id"] == "feast_default"]
    inside = Path(feast["conn_extra"]["repo_path"]).relative_to(astro_cli.AIRFLOW_HOME_IN_IMAGE)
    assert (PROJECT / inside / "feature_store.yaml").is_file(), inside


def test_compose_override_shares_mlops_home_between_the_airflow_containers() -> None:
    override = yaml.safe_load((PROJECT / "docker-compose.override.yml").read_text())
    services = override["services"]
    assert set(services) <= astro_cli.COMPOSE_SERVICES, set(services) - astro_cli.COMPOSE_SERVICES
    home = _dockerfile_env("MLOPS_HOME")
    mounts = {name: [v for v in services.get(name, {}).get("volumes", []) if v.endswith(f":{home}")]
              for name in astro_cli.AIRFLOW_COMPONENTS}
    sources = {m.split(":")[0] for found in mounts.values() for m in found}
    assert all(len(found) == 1 for found in mounts.values()) and len(sources) == 1, mounts
    assert sources <= set(override["volumes"]), "the shared volume must be a named volume of the override"
