"""What the Astro CLI reads from an Astro project, transcribed from its source (astronomer/astro-cli).

astro itself cannot be downloaded or run here (no Docker engine), so the tests check our files against
these rules instead. Each constant names the file and commit it was read from; when the CLI changes, re-read
that file and update the constant, not the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# airflow/airflow.go @ 4464a4785bfd9cdfedf2ab5ea1ca9897cd7e5997, Init(), the Airflow 3 branch: what
# `astro dev init` writes (files, then directories). cmd/airflow.go's airflowInit() adds .astro/config.yaml
# (config.CreateProjectConfig + CFG.ProjectName.SetProjectString).
INIT_FILES = (
    ".dockerignore", "Dockerfile", ".gitignore", "packages.txt", "requirements.txt", ".env",
    "airflow_settings.yaml", "dags/exampledag.py", "dags/.airflowignore", "README.md",
    "tests/dags/test_dag_example.py", ".astro/test_dag_integrity_default.py",
    ".astro/dag_integrity_exceptions.txt", ".astro/config.yaml",
)
INIT_DIRS = ("dags", "plugins", "include")
# The same Init() writes this line into .astro/dag_integrity_exceptions.txt.
EXCEPTIONS_TEMPLATE = "# Add dag files to exempt from parse test below. ex: dags/<test-file>"

# airflow/include/dockerignore @ 904367f624de217b79c611d320a5e656b6c0b34b: the CLI's .dockerignore template.
DOCKERIGNORE_TEMPLATE = ("astro", ".git", ".env", "airflow_settings.yaml", "logs/", ".venv", "airflow.db",
                         "airflow.cfg")

# config/config.go @ d16bd52053a4d8a531d12097aac2cf85e18dff2b, the CFG table: every key `astro config set`
# knows (the project file .astro/config.yaml holds a subset of them).
CONFIG_KEYS = frozenset({
    "cloud.api.protocol", "cloud.api.port", "cloud.api.ws_protocol", "cloud.api.token", "context", "contexts",
    "container.binary", "local.astrohub", "local.core", "local.public_astrohub", "local.registry",
    "local.houston", "local.platform", "postgres.user", "postgres.password", "postgres.host", "postgres.port",
    "postgres.repository", "postgres.tag", "project.deployment", "project.name", "project.workspace",
    "webserver.port", "airflow.expose_port", "show_warnings", "verbosity", "houston.dial_timeout",
    "houston.skip_verify_tls", "duplicate_volumes", "skip_parse", "interactive", "page_size", "upgrade_message",
    "disable_astro_run", "disable_env_objects",
})
# cmd/airflow.go, the project-name check of `astro dev init --name`: ensureProjectName() in the current
# version, the inline regexp in older ones (@ 6face1c97b2e4039c367da3cdb0792f51df12318's ancestors). Both apply.
# Go's `^(?i)...` is written with re.IGNORECASE here (Python wants global flags first).
PROJECT_NAME_RULES = (re.compile(r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])$", re.IGNORECASE),
                      re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?$"))

# airflow/include/airflow3/composeyml.go.tmpl @ 45d6a850dc4dd91d1a191356a70b38e128ec0cd7: the services of
# `astro dev start` for Airflow 3; the four below run the image (and our code), postgres is the CLI's own DB.
COMPOSE_SERVICES = frozenset({"postgres", "db-migration", "scheduler", "dag-processor", "api-server", "triggerer"})
AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "api-server", "triggerer")
AIRFLOW_HOME_IN_IMAGE = "/usr/local/airflow"

# settings/types.go @ 08acefe72019542a49eaaabb57d3d666375301d2: the mapstructure tags viper decodes
# airflow_settings.yaml into (Config > Airflow > Connections / Pools / Variables). mapstructure ignores any
# other key without a word, so an unknown field is silently lost.
SETTINGS_ROOT = frozenset({"airflow"})
SETTINGS_SECTIONS = frozenset({"connections", "pools", "variables"})
CONNECTION_FIELDS: dict[str, type] = {
    "conn_id": str, "conn_type": str, "conn_host": str, "conn_schema": str, "conn_login": str,
    "conn_password": str, "conn_port": int, "conn_uri": str, "conn_extra": object,
}
POOL_FIELDS: dict[str, type] = {"pool_name": str, "pool_slot": int, "pool_description": str}
VARIABLE_FIELDS: dict[str, type] = {"variable_name": str, "variable_value": str}


def settings_errors(data: Any) -> list[str]:
    """Every way airflow_settings.yaml would be misread or partly skipped by the CLI.

    The rules are settings/settings.go's AddConnections / AddPools / AddVariables / jsonString
    (@ 3eeb8753f5aa20bae35855dfa953d06d10ec2b78; @ 0024c995cf1bb4dd213efbd64ad4ae6a0b0c07b3 for the older
    jsonString that keeps only string-valued extras).
    """
    if not isinstance(data, Mapping) or set(data) - SETTINGS_ROOT:
        return [f"top level: only {sorted(SETTINGS_ROOT)} is read, found {sorted(data or {})}"]
    airflow = data.get("airflow") or {}
    errors = [f"airflow.{key}: not read by the CLI (reads {sorted(SETTINGS_SECTIONS)})"
              for key in sorted(set(airflow) - SETTINGS_SECTIONS)]
    conns = airflow.get("connections") or []
    errors += [e for i, conn in enumerate(conns) for e in _connection_errors(f"connections[{i}]", conn)]
    ids = [c.get("conn_id") for c in conns if isinstance(c, Mapping)]
    errors += [f"connections: conn_id {i!r} declared twice (the second deletes the first)"
               for i in sorted({i for i in ids if ids.count(i) > 1})]
    for i, pool in enumerate(airflow.get("pools") or []):
        where = f"pools[{i}]"
        errors += _field_errors(where, pool, POOL_FIELDS)
        if isinstance(pool, Mapping) and not (isinstance(pool.get("pool_slot"), int) and pool["pool_slot"] > 0):
            errors.append(f"{where}: pool_slot must be a positive integer (the CLI skips a pool without slots)")
    for i, var in enumerate(airflow.get("variables") or []):
        where = f"variables[{i}]"
        errors += _field_errors(where, var, VARIABLE_FIELDS)
        if isinstance(var, Mapping) and not (var.get("variable_name") and var.get("variable_value")):
            errors.append(f"{where}: variable_name and variable_value must both be set (else it is skipped)")
    return errors


def _connection_errors(where: str, conn: Any) -> list[str]:
    errors = _field_errors(where, conn, CONNECTION_FIELDS)
    if not isinstance(conn, Mapping):
        return errors
    if not conn.get("conn_id"):
        errors.append(f"{where}: conn_id is empty (the CLI skips the connection)")
    if not (conn.get("conn_type") or conn.get("conn_uri")):
        errors.append(f"{where}: set conn_type or conn_uri (the CLI skips the connection otherwise)")
    others = [f for f in ("conn_type", "conn_host", "conn_login", "conn_password", "conn_schema", "conn_port")
              if conn.get(f)]
    if conn.get("conn_uri") and others:
        errors.append(f"{where}: conn_uri is ignored when {others} are set; use one or the other")
    errors += _extra_errors(where, conn.get("conn_extra"))
    return errors


def _field_errors(where: str, item: Any, fields: Mapping[str, type]) -> list[str]:
    if not isinstance(item, Mapping):
        return [f"{where}: expected a mapping, got {type(item).__name__}"]
    errors = [f"{where}.{key}: not a field the CLI reads ({sorted(fields)}); it would be silently dropped"
              for key in sorted(set(item) - set(fields))]
    for key, kind in fields.items():
        value = item.get(key)
        if value is None or kind is object:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            errors.append(f"{where}.{key}: must be {kind.__name__}, got {value!r}")
        elif isinstance(value, str) and "'" in value:
            errors.append(f"{where}.{key}: contains a single quote; the CLI wraps values in single quotes "
                          "for `airflow ... add`")
    return errors


def _extra_errors(where: str, extra: Any) -> list[str]:
    if extra is None:
        return []
    if isinstance(extra, str):
        try:
            parsed = json.loads(extra)
        except ValueError as exc:
            return [f"{where}.conn_extra: a string extra is passed as-is and must be a JSON object ({exc})"]
        return [] if isinstance(parsed, dict) else [f"{where}.conn_extra: a string extra must be a JSON object"]
    if not isinstance(extra, Mapping):
        return [f"{where}.conn_extra: must be a mapping (or a JSON-object string), got {type(extra).__name__}"]
    errors = [f"{where}.conn_extra.{key}: value {value!r} is not a string; CLIs before the json.Marshal "
              "jsonString drop it without a word, so write it quoted" for key, value in extra.items()
              if not isinstance(value, str)]
    if "'" in json.dumps(extra):
        errors.append(f"{where}.conn_extra: contains a single quote (the CLI single-quotes the JSON)")
    return errors


def airflow_connection(conn: Mapping[str, Any]) -> dict[str, Any]:
    """The Airflow connection `airflow connections add` gets from one settings entry: only the fields the
    CLI passes (non-empty; a non-zero port), the extra as JSON (AddConnections + jsonString)."""
    out: dict[str, Any] = {"conn_type": conn.get("conn_type")}
    for field, name in (("conn_host", "host"), ("conn_login", "login"), ("conn_password", "password"),
                        ("conn_schema", "schema")):
        if conn.get(field):
            out[name] = conn[field]
    if conn.get("conn_port"):
        out["port"] = conn["conn_port"]
    extra = conn.get("conn_extra")
    if extra:
        out["extra"] = extra if isinstance(extra, str) else json.dumps(dict(extra))
    return out
