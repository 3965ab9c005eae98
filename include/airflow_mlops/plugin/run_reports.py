"""What one DAG run produced, for the per-run "MLOps reports" view: the caller checked DAG access.

- validation run pages: `reports/validation/_runs/<dag>/<run>/<task>/index.html` (core.validation_report);
- drift/performance checks the run recorded in the monitoring history, with their report links;
- model versions the run registered (version tags `airflow_mlops.airflow.dag_id/run_id`), with links
  to their evaluation report and model card.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from typing import Any

from airflow_mlops.plugin import URL_PREFIX
from airflow_mlops.plugin import models_data as data

log = logging.getLogger(__name__)


def run_reports(dag_id: str, run_id: str) -> dict[str, Any]:
    known = data.specs()
    model = data.model_of_dag(dag_id, known)
    versions: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    if model is not None:
        rows = data.versions(data.client(), model)
        versions = [row for row in rows if (row["airflow"]["dag_id"], row["airflow"]["run_id"]) == (dag_id, run_id)]
        checks = [dict(record, report_url=report_url_of(record)) for record in data.monitoring(model, None)
                  if record.get("run_id") == run_id and record.get("dag_id") in (dag_id, None)]
    return {"dag_id": dag_id, "run_id": run_id, "model": model, "validation": validation_pages(dag_id, run_id),
            "checks": checks, "versions": versions}


def validation_pages(dag_id: str, run_id: str) -> list[dict[str, str]]:
    """The validation run pages of this run, one per task (names made safe as the writer did)."""
    from airflow_mlops.config import paths
    from airflow_mlops.core.validation_report import RUNS_SUBDIR, _safe

    root = paths().reports_dir / "validation"
    folder = root / RUNS_SUBDIR / _safe(dag_id) / _safe(run_id)
    try:
        if not folder.is_dir():
            return []
    except OSError as exc:  # a name no file system can hold (e.g. longer than 255 bytes): no such run folder
        if exc.errno != errno.ENAMETOOLONG:
            raise
        return []
    return [{"task_id": page.parent.name, "url": f"{URL_PREFIX}/reports/validation/{page.relative_to(root).as_posix()}"}
            for page in sorted(folder.glob("*/index.html"))]


def report_url_of(record: Mapping[str, Any]) -> str | None:
    """The report link a monitoring record carries (`details.report_url`, or a served `report_uri`)."""
    details = record.get("details") or {}
    for key in ("report_url", "report_uri", "report"):
        value = details.get(key)
        if isinstance(value, Mapping):
            value = value.get("url")
        if isinstance(value, str) and value.startswith(f"{URL_PREFIX}/reports/"):
            return value
    return None
