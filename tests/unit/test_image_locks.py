"""The Runtime image's Python is the Python of the lock it installs, and the two locks do not drift.

requirements/lock.txt (Python 3.11, dev group) makes the venv; requirements/lock-py3.12.txt (runtime deps)
makes the Astro Runtime image, whose Airflow 3.3 builds ship no 3.11. A package in one lock only must be
explained by the lock files themselves plus the installed metadata: reached only from the dev group, or
required under a marker that holds for one Python and not the other.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

PROJECT = Path(__file__).resolve().parents[2]
VENV_LOCK = PROJECT / "requirements" / "lock.txt"
IMAGE_LOCK = PROJECT / "requirements" / "lock-py3.12.txt"
ROOT, DEV_ROOT = "airflow-mlops (pyproject.toml)", "airflow-mlops (pyproject.toml:dev)"
# astro-cli's runtime catalog entry for the build in the Dockerfile (as carried in its tests: "3.3-8":
# airflowVersion 3.3.2, pythonVersions 3.12/3.13/3.14); the live catalog is not reachable from here.
RUNTIME_AIRFLOW = {"3.3-8": "3.3.2"}
RUNTIME_PYTHONS = {"3.3-8": ("3.12", "3.13", "3.14")}


@dataclass
class Lock:
    path: Path
    python: str
    command: str
    pins: dict[str, str] = field(default_factory=dict)
    parents: dict[str, set[str]] = field(default_factory=dict)


def _read_lock(path: Path) -> Lock:
    text = path.read_text()
    command = re.search(r"^#\s+(uv pip compile .*)$", text, re.MULTILINE).group(1)
    lock = Lock(path, re.search(r"--python-version (\d+\.\d+)", command).group(1), command)
    current = ""
    for line in text.splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)(?:\[[^\]]*\])?==(\S+)", line):
            current = canonicalize_name(match.group(1))
            lock.pins[current] = match.group(2)
            lock.parents[current] = set()
        elif current and (via := re.match(r"^\s+#\s+(?:via\s+|\s*)(\S.*)$", line)) and via.group(1) != "via":
            lock.parents[current].add(via.group(1).strip() if "(" in via.group(1) else
                                      canonicalize_name(via.group(1).strip()))
    return lock


def _dockerfile() -> tuple[str, str, str]:
    text = (PROJECT / "Dockerfile").read_text()
    build, python = re.search(r"^FROM astrocrpublic\.azurecr\.io/runtime:(\d+\.\d+-\d+)-python-(\d+\.\d+)\s*$",
                              text, re.MULTILINE).groups()
    constraint = re.search(r"pip install [^\n]*--constraint (\S+)", text).group(1)
    return build, python, constraint


def _marker_splits(parent: str, child: str, this: str, other: str) -> bool:
    """True when `parent` requires `child` under a marker that holds for Python `this` and not `other`."""
    env = {py: {"python_version": py, "python_full_version": f"{py}.0"} for py in (this, other)}
    try:
        requires = importlib.metadata.requires(parent) or []
    except importlib.metadata.PackageNotFoundError:
        return False
    extras = [""] + (importlib.metadata.metadata(parent).get_all("Provides-Extra") or [])
    for req in map(Requirement, requires):
        if canonicalize_name(req.name) != child or req.marker is None:
            continue
        holds = {py: any(req.marker.evaluate({**env[py], "extra": e}) for e in extras) for py in (this, other)}
        if holds[this] and not holds[other]:
            return True
    return False


def _unexplained(lock: Lock, other: Lock, dev_ok: bool) -> dict[str, set[str]]:
    """Packages only in `lock` with a parent that should have pulled them into `other` too."""
    only = set(lock.pins) - set(other.pins)
    out = {}
    for name in sorted(only):
        bad = {p for p in lock.parents[name]
               if not ((dev_ok and p == DEV_ROOT) or p in only or _marker_splits(p, name, lock.python, other.python))}
        if bad:
            out[name] = bad
    return out


def test_the_image_installs_the_lock_of_its_python() -> None:
    build, python, constraint = _dockerfile()
    lock = _read_lock(PROJECT / constraint)
    assert lock.path == IMAGE_LOCK, f"Dockerfile constrains with {constraint}, expected {IMAGE_LOCK.name}"
    assert lock.python == python, (f"Dockerfile runs Python {python} (runtime:{build}) but {constraint} "
                                   f"is for {lock.python}")
    assert python in RUNTIME_PYTHONS[build], f"runtime:{build} ships Python {RUNTIME_PYTHONS[build]}, not {python}"
    assert "--group" not in lock.command and "--extra" not in lock.command, f"{constraint}: runtime deps only"
    assert lock.pins["apache-airflow"] == RUNTIME_AIRFLOW[build], "the lock's Airflow must be the Runtime's"


def test_the_venv_lock_is_for_the_python_the_tests_run() -> None:
    import sys

    assert _read_lock(VENV_LOCK).python == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_both_locks_pin_the_same_version_of_every_shared_package() -> None:
    venv, image = _read_lock(VENV_LOCK), _read_lock(IMAGE_LOCK)
    drift = {n: (venv.pins[n], image.pins[n]) for n in set(venv.pins) & set(image.pins)
             if venv.pins[n] != image.pins[n]}
    assert not drift, f"versions differ between the locks (run `make lock`): {drift}"


def test_packages_in_one_lock_only_come_from_the_dev_group_or_a_python_marker() -> None:
    venv, image = _read_lock(VENV_LOCK), _read_lock(IMAGE_LOCK)
    assert not _unexplained(venv, image, dev_ok=True), "in lock.txt only, pulled in by runtime deps"
    assert not _unexplained(image, venv, dev_ok=False), "in lock-py3.12.txt only, pulled in by runtime deps"
    # a Python marker, not the dev group, keeps async-timeout out of the 3.12 lock (redis: python < 3.11.3)
    assert "async-timeout" in venv.pins and "async-timeout" not in image.pins
    assert _marker_splits("redis", "async-timeout", venv.python, image.python)


def test_a_runtime_package_missing_from_the_image_lock_is_caught() -> None:
    venv, image = _read_lock(VENV_LOCK), _read_lock(IMAGE_LOCK)
    del image.pins["mlflow"]
    assert "mlflow" in _unexplained(venv, image, dev_ok=True)
