"""The `unit` layer runs without Airflow: a run whose selected tests are all `unit` fails if any loaded `airflow`.

Registered by tests/conftest.py. Airflow-specific tests (operators, sensors, triggers, DAG objects, the plugin)
carry the `adapter` marker instead. The check is on this process's `sys.modules`: child processes a test
starts are its own business. The first collected module or test after which an `airflow` module is loaded is
named, so the message points at the test to re-mark or the import to make lazy.
"""

from __future__ import annotations

import sys

import pytest


def airflow_modules() -> list[str]:
    return sorted(name for name in sys.modules if name == "airflow" or name.startswith("airflow."))


class UnitGuard:
    """Remembers where Airflow was first loaded; fails an all-`unit` session that loaded it."""

    def __init__(self) -> None:
        self.unit_only = False
        self.first_loader: str | None = None

    def _note(self, where: str) -> None:
        if self.first_loader is None and "airflow" in sys.modules:
            self.first_loader = where

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._note(f"collecting {report.nodeid or 'the session'} (a module-level import)")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.unit_only = bool(session.items) and all(item.get_closest_marker("unit") for item in session.items)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self._note(nodeid)

    def violated(self) -> bool:
        return self.unit_only and bool(airflow_modules())

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.violated():
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.violated():
            loaded = airflow_modules()
            terminalreporter.section("unit layer loaded Airflow", sep="=", red=True, bold=True)
            terminalreporter.write_line(
                f"{len(loaded)} airflow modules are loaded (first seen after {self.first_loader}); the unit layer "
                "must import no Airflow. Mark that test `adapter` if it exercises an Airflow object, or make the "
                "import lazy / move it out of the module's top.")
