"""The conftest.py of the child pytest project in tests/unit/test_unit_guard.py: registers support/unit_guard.

The test copies it as `conftest.py` into the child project (with tests/ on PYTHONPATH, for `support`).
"""

from typing import Any

from support.unit_guard import UnitGuard


def pytest_configure(config: Any) -> None:
    config.pluginmanager.register(UnitGuard(), "unit-guard")
