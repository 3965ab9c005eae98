"""The environment every entry point (CLI, make targets, tests) gives Airflow.

Set before `airflow` is imported: Airflow reads its configuration once, at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

from airflow_mlops import config
from airflow_mlops.privacy import TELEMETRY_OFF


def airflow_env() -> dict[str, str]:
    """Embedded-profile defaults; anything already in the environment wins (production profile)."""
    home = config.paths()
    project = config.project_dir()
    return {
        "MLOPS_HOME": str(home.home),
        "AIRFLOW_HOME": str(home.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Spec files change rarely; re-parsing every 30 s is plenty and keeps a laptop quiet.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "60",
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        **TELEMETRY_OFF,
    }


def apply_airflow_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Fill the missing variables in place and return the effective values."""
    target = os.environ if environ is None else environ
    for key, value in airflow_env().items():
        target.setdefault(key, value)
    os.makedirs(target["AIRFLOW_HOME"], exist_ok=True)
    return {key: target[key] for key in airflow_env()}


# Airflow's shipped defaults of the settings `up` derives; airflow.cfg (which Airflow writes with every
# default spelled out) counts as the user's choice only where it differs from these.
AIRFLOW_DEFAULTS = {
    ("core", "parallelism"): "32",
    ("logging", "worker_log_server_port"): "8793",
    ("logging", "trigger_log_server_port"): "8794",
}
DEFAULT_API_PORT = 8080


def user_setting(section: str, key: str, environ: Mapping[str, str]) -> str | None:
    """An Airflow option the user chose: its variable (or _CMD/_SECRET), else a non-default airflow.cfg value."""
    name = f"AIRFLOW__{section.upper()}__{key.upper()}"
    for variable in (name, f"{name}_CMD", f"{name}_SECRET"):
        if environ.get(variable):
            return environ[variable]
    home = environ.get("AIRFLOW_HOME")
    config_file = environ.get("AIRFLOW_CONFIG") or (os.path.join(home, "airflow.cfg") if home else None)
    if not config_file or not os.path.isfile(config_file):
        return None
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(config_file, encoding="utf-8")
    except configparser.Error:
        return None
    value = parser.get(section, key, fallback="").strip()
    return value if value and value != AIRFLOW_DEFAULTS.get((section, key)) else None


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask: a container's limit), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def port_free(port: int, host: str = "") -> bool:
    """Nothing listens on `port` of `host` ("" = every address), so a server can bind it."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no obstacle
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def standalone_env(port: int | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The settings `airflow-mlops up` adds: everything that follows the API port, sized to this machine.

    Port: `port`, else AIRFLOW__API__PORT, else 8080. The UI base URL and the Execution API URL
    the task processes call follow it (Airflow's own fallback for both is localhost:8080, so without
    this a non-default port runs no task). The log servers of the LocalExecutor and the triggerer get
    Airflow's ports when free, else free ones (a second `up` must not collide with the first).
    Parallelism (= the LocalExecutor worker processes forked at start) follows the usable CPUs
    instead of Airflow's 32. The scheduler preloads the heavy libraries (`[mlops] preload_libraries`).
    Anything the user set (variable or airflow.cfg) wins.
    """
    source = os.environ if environ is None else environ
    port = port or int(source.get("AIRFLOW__API__PORT") or DEFAULT_API_PORT)
    host = source.get("AIRFLOW__API__HOST") or "127.0.0.1"  # a laptop UI with a generated password: not on the LAN
    env = {"AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": host}
    loopback = host in ("0.0.0.0", "::", "127.0.0.1", "localhost")
    browser, local = ("localhost", "127.0.0.1") if loopback else (host, host)
    if user_setting("api", "base_url", source) is None:
        # What the browser opens (login redirects there); the tasks call the Execution API under it.
        env["AIRFLOW__API__BASE_URL"] = f"http://{browser}:{port}/"
        if user_setting("core", "execution_api_server_url", source) is None:
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://{local}:{port}/execution/"
    taken = {port}
    for key in ("worker_log_server_port", "trigger_log_server_port"):
        if user_setting("logging", key, source) is None:
            chosen = int(AIRFLOW_DEFAULTS[("logging", key)])
            while chosen in taken or not port_free(chosen):
                chosen = _free_port()
            taken.add(chosen)
            env[f"AIRFLOW__LOGGING__{key.upper()}"] = str(chosen)
    if user_setting("core", "parallelism", source) is None:
        env["AIRFLOW__CORE__PARALLELISM"] = str(max(2, usable_cpus()))
    if user_setting("mlops", "preload_libraries", source) is None:
        # The scheduler imports the heavy libraries once; its forked workers and tasks inherit them
        # (plugin/preload.py): a light task no longer pays seconds of imports.
        env["AIRFLOW__MLOPS__PRELOAD_LIBRARIES"] = "True"
    return env
