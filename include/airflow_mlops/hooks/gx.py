"""GXHook: settings (where the suites are) → an in-memory Great Expectations context and loaded suites.

Settings resolve as: explicit argument > extras of the optional `gx_default` connection
(`expectations_dir`) > MLOPS_EXPECTATIONS_DIR > `include/expectations/`. A missing connection is
fine: the embedded profile needs none. The context is ephemeral (no files, no Data Docs, no
analytics, no progress bars), so validating never writes anything but our own reports. GX is
imported inside methods only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException, AirflowRuntimeError, ErrorType

from airflow_mlops import config
from airflow_mlops.core.validation import gx_context, load_suite, suite_path
from airflow_mlops.exceptions import DataValidationFailed

log = logging.getLogger(__name__)


class GXHook(BaseHook):
    """Great Expectations: suites from the expectations dir and an in-memory context to run them in.

    :param gx_conn_id: optional connection whose extra `expectations_dir` overrides the default.
    :param expectations_dir: directory of `<suite>.json` files; overrides the connection and
        MLOPS_EXPECTATIONS_DIR.
    """

    conn_name_attr = "gx_conn_id"
    default_conn_name = "gx_default"
    hook_name = "Great Expectations"

    def __init__(self, gx_conn_id: str = default_conn_name, expectations_dir: str | Path | None = None) -> None:
        super().__init__()
        self.gx_conn_id = gx_conn_id
        self._expectations_dir = expectations_dir
        self._resolved_dir: Path | None = None
        self._context: Any = None

    def _connection_extras(self) -> dict[str, Any]:
        try:
            conn = self.get_connection(self.gx_conn_id)
        except AirflowNotFoundException:
            return {}
        except AirflowRuntimeError as err:  # a raw "not found" from the task runtime's API comms
            if err.error.error != ErrorType.CONNECTION_NOT_FOUND:
                raise
            return {}
        return dict(conn.extra_dejson or {})

    @property
    def expectations_dir(self) -> Path:
        if self._resolved_dir is None:
            chosen = self._expectations_dir or self._connection_extras().get("expectations_dir")
            self._resolved_dir = Path(chosen or config.expectations_dir()).resolve()
        return self._resolved_dir

    def get_conn(self) -> Any:
        """The in-memory GX context (created once per hook)."""
        if self._context is None:
            self._context = gx_context()
        return self._context

    def load_suite(self, name: str, *, required: bool = True) -> dict[str, Any] | None:
        """Suite `<expectations_dir>/<name>.json`; a missing file raises, or returns None when not `required`."""
        if not required and not suite_path(name, self.expectations_dir).is_file():
            log.warning("no suite %s in %s; its data passes unvalidated (required=False)", name, self.expectations_dir)
            return None
        return load_suite(name, self.expectations_dir)

    def suite_loader(self, *, required: bool = True) -> Any:
        """`load_suite` as a one-argument callable, as `core.gate.validate_landing` wants it."""

        def load(name: str) -> dict[str, Any] | None:
            return self.load_suite(name, required=required)

        return load

    def dataset_schemas(self) -> dict[str, tuple[str, ...]]:
        """Every suite's column set (`core.plausibility.suite_columns`): for the wrong-dataset rule."""
        from airflow_mlops.core.plausibility import suite_columns

        schemas = {}
        for path in sorted(self.expectations_dir.glob("*.json")):
            try:
                schemas[path.stem] = suite_columns(load_suite(path.stem, self.expectations_dir))
            except DataValidationFailed as exc:  # reported when its own dataset is validated
                log.debug("suite %s skipped for schema matching: %s", path.stem, exc)
        return {name: columns for name, columns in schemas.items() if columns}

    def test_connection(self) -> tuple[bool, str]:
        try:
            names = sorted(p.stem for p in self.expectations_dir.glob("*.json"))
        except OSError as exc:
            return False, f"cannot list {self.expectations_dir}: {exc}"
        if not names:
            return False, f"no suite in {self.expectations_dir}"
        for name in names:
            try:
                self.load_suite(name)
            except DataValidationFailed as exc:
                return False, str(exc)
        return True, f"{len(names)} suite(s) in {self.expectations_dir}: {', '.join(names)}"
