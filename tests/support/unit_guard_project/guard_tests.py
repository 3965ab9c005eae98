"""The test module of the child pytest project in tests/unit/test_unit_guard.py, copied as `test_layer.py`.

One pure unit test, and one test marked UNIT_GUARD_MARKER (environment) that puts an `airflow` module in
`sys.modules` when UNIT_GUARD_LOADS is "True". (Named so the project's own pytest run does not collect it.)
"""

import os
import sys
import types

import pytest

LAYER: pytest.MarkDecorator = getattr(pytest.mark, os.environ["UNIT_GUARD_MARKER"])


@pytest.mark.unit
def test_pure() -> None:
    assert True


@LAYER
def test_that_loads_airflow() -> None:
    if os.environ["UNIT_GUARD_LOADS"] == "True":
        sys.modules.setdefault("airflow", types.ModuleType("airflow"))
