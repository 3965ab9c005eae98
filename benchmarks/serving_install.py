"""Serving install (airflow-mlops-serving, no Airflow) vs the full install: installed size and import time.

Builds two fresh venvs with uv in a temp dir, the way the images install them:
- full: the runtime dependencies of pyproject.toml at requirements/lock.txt's pins (what docker/serving.Dockerfile
  installed before the serving distribution), then the project with --no-deps;
- serving: requirements/serving.txt, then serving/ with --no-deps (docker/serving.Dockerfile now).
Reports site-packages size (`du -sm`, one venv per du call: uv hard-links from its cache), distributions,
and the median wall time of `python -c "import airflow_mlops.serving.app"` in fresh processes (alternating
the two venvs), plus what a server loads to answer: the serving app, mlflow.sklearn, feast and uvicorn; and,
in the full venv, that plus the two hooks the server built its stores with before core.store_settings.

    .venv/bin/python benchmarks/serving_install.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
UV = Path(sys.executable).with_name("uv")
IMPORTS = {"app": "import airflow_mlops.serving.app",
           "server": "import airflow_mlops.serving.app, airflow_mlops.serving.features, mlflow.sklearn, feast, uvicorn"}
# What a server loaded before core.store_settings: its stores came through the hooks, i.e. Airflow (full venv only).
BEFORE = IMPORTS["server"] + ", airflow_mlops.hooks.mlflow, airflow_mlops.hooks.feast"


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True)


def _venv(root: Path, name: str, requirements: Path, project: Path) -> Path:
    venv = root / name
    python = venv / "bin" / "python"
    _run(str(UV), "venv", "--quiet", "--python", sys.executable, str(venv))
    _run(str(UV), "pip", "install", "--quiet", "--python", str(python), "-r", str(requirements))
    _run(str(UV), "pip", "install", "--quiet", "--python", str(python), "--no-deps", str(project))
    return venv


def _size_mb(venv: Path) -> int:
    site = next((venv / "lib").glob("python3.*/site-packages"))
    return int(subprocess.run(["du", "-sm", str(site)], check=True, capture_output=True, text=True).stdout.split()[0])


def _distributions(venv: Path) -> int:
    done = subprocess.run([str(UV), "pip", "list", "--python", str(venv / "bin" / "python"), "--format", "json"],
                          check=True, capture_output=True, text=True)
    return len(json.loads(done.stdout))


def _import_seconds(venv: Path, statement: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(venv / "bin" / "python"), "-c", statement], check=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        full_requirements = root / "full-runtime.txt"
        _run(str(UV), "pip", "compile", "--quiet", str(PROJECT / "pyproject.toml"), "--python-version", "3.11",
             "--constraint", str(PROJECT / "requirements" / "lock.txt"), "-o", str(full_requirements))
        venvs = {"full": _venv(root, "full", full_requirements, PROJECT),
                 "serving": _venv(root, "serving", PROJECT / "requirements" / "serving.txt", PROJECT / "serving")}
        result: dict[str, dict[str, float]] = {}
        for name, venv in venvs.items():
            result[name] = {"site_packages_mb": _size_mb(venv), "distributions": _distributions(venv)}
            _import_seconds(venv, IMPORTS["server"])  # warm the page cache once
        for key, statement in IMPORTS.items():
            times: dict[str, list[float]] = {name: [] for name in venvs}
            for _ in range(args.repeat):
                for name, venv in venvs.items():  # alternating: both see the same machine load
                    times[name].append(_import_seconds(venv, statement))
            for name in venvs:
                result[name][f"import_{key}_s"] = round(statistics.median(times[name]), 3)
        before = [_import_seconds(venvs["full"], BEFORE) for _ in range(args.repeat)]
        result["full"]["import_server_via_hooks_s"] = round(statistics.median(before), 3)
    full, serving = result["full"], result["serving"]
    print(json.dumps(result, indent=2))
    print(f"site-packages: {full['site_packages_mb']} MB -> {serving['site_packages_mb']} MB "
          f"({serving['site_packages_mb'] / full['site_packages_mb']:.2f}x); distributions "
          f"{full['distributions']:.0f} -> {serving['distributions']:.0f}")
    print(f"server imports, before (stores through the hooks, full install): {full['import_server_via_hooks_s']:.2f} s")
    for key in IMPORTS:
        print(f"import {key}: {full[f'import_{key}_s']:.2f} s -> {serving[f'import_{key}_s']:.2f} s "
              f"({serving[f'import_{key}_s'] / full[f'import_{key}_s']:.2f}x)")


if __name__ == "__main__":
    main()
