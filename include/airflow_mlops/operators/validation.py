"""Data validation operators: the gate in front of the offline store and in front of training.

Thin by design: `execute()` resolves the suite through GXHook, calls `core.gate` and pushes the
summary to XCom; the rules, reports and quarantine are `core.validation` / `core.gate`.

- XCom key `validation` — the summary (statistics, top failures with column, rule, arguments,
  unexpected count and a sample, report paths, quarantine path). Pushed also when the task fails,
  so the failure can be inspected without reading logs. A successful task returns it too.
- Extra link "Validation report" (`ValidationReportLink`) — `/mlops/reports/validation/<relpath>`,
  where `<relpath>` is relative to `MLOPS_HOME/reports/validation`:
  `<dataset>/<batch_id>/report.html` for one batch, `_runs/<dag_id>/<run_id>/<task_id>/index.html`
  for `GXValidateRawBatchesOperator` (a page linking every file's report). The mlops UI plugin
  serves that prefix (auth-checked); the link is empty when the task pushed no summary.
- Failure in `fail` mode raises DataValidationFailed listing the top failures and where the report
  is; in `warn` mode the task succeeds and logs the same text as a warning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.exceptions import DataValidationFailed
from airflow_mlops.openlineage.record import recall, remember

if TYPE_CHECKING:
    import pandas as pd
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

    from airflow_mlops.openlineage.datasets import Lineage

XCOM_KEY = "validation"


def report_link(summary: Any) -> str:
    """The extra-link URL stored in a validation summary ('' when there is none)."""
    if isinstance(summary, Mapping) and isinstance(summary.get("report"), Mapping):
        return str(summary["report"].get("url") or "")
    return ""


class ValidationReportLink(BaseOperatorLink):
    """Opens the task's validation report: `/mlops/reports/validation/<relpath>` (see the module doc)."""

    name = "Validation report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return under_base_url(report_link(XCom.get_value(ti_key=ti_key, key=XCOM_KEY)))


def under_base_url(url: str) -> str:
    """A server-relative link, prefixed with the path of `[api] base_url` (Airflow behind /airflow/...)."""
    from urllib.parse import urlsplit

    from airflow.configuration import conf

    if not url.startswith("/"):
        return url
    prefix = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{prefix}{url}"


def announce(context: Context) -> None:
    """Push an empty summary first: the "Validation report" link of a task that fails before validating
    (a Feast error in build_training_set) then finds an empty result instead of logging "XCom not found"."""
    context["ti"].xcom_push(key=XCOM_KEY, value={})


def _finish(operator: BaseOperator, context: Context, summary: dict[str, Any], failed: bool, warn: bool,
            message: str) -> dict[str, Any]:
    """Push the summary (with the failure text as `message`), then raise (fail mode), warn (warn mode) or return it."""
    from airflow_mlops.core.xcom import json_safe

    summary = json_safe({**summary, "message": message})  # NaN/inf/huge ints in samples must not break XCom
    context["ti"].xcom_push(key=XCOM_KEY, value=summary)
    if failed and not warn:
        raise DataValidationFailed(message)
    if failed:
        operator.log.warning("validation failed in warn mode; the data goes on:\n%s", message)
    return summary


def _as_batch(data: Any) -> Path | pd.DataFrame:
    """A path (str, Path, dict with "path", or its JSON text) or a DataFrame."""
    if isinstance(data, str) and data.lstrip().startswith("{"):
        data = json.loads(data)
    if isinstance(data, Mapping):
        data = data["path"]
    if isinstance(data, str | Path):
        return Path(data)
    return data


def _quarantine_log(context: Context) -> Path:
    """The task run's record of quarantined batches (shared by every try of the run)."""
    from airflow_mlops.config import paths
    from airflow_mlops.core.validation_report import run_folder

    ti = context["ti"]
    return run_folder(paths().reports_dir / "validation", ti.dag_id, ti.run_id, ti.task_id) / "quarantined.jsonl"


def _check_mode(mode: str | None) -> str | None:
    if mode not in (None, "", "fail", "warn"):
        raise DataValidationFailed(f"mode must be 'fail' or 'warn' (or None for the suite's default), got {mode!r}")
    return mode or None


class GXValidateDataOperator(TaskBoundary, BaseOperator):
    """Validate one batch — a parquet/CSV file or a DataFrame from upstream — against a GX suite.

    Runs the suite `<expectations dir>/<suite>.json` plus the contract rules (tz-aware UTC and
    not-future timestamps, label leakage), writes `result.json` and a self-contained `report.html`
    under `MLOPS_HOME/reports/validation/`, and in fail mode moves a failing file (or writes a
    failing DataFrame) to `MLOPS_HOME/quarantine/<dataset>/` with the report beside it, then raises
    DataValidationFailed. Returns (and pushes as XCom `validation`) the summary.

    :param data: file path, DataFrame, or a dict with "path" such as a training-set lineage (templated).
    :param suite: suite name (templated).
    :param mode: "fail" or "warn"; None uses the suite's `meta.airflow_mlops.mode` (templated).
    :param quarantine: in fail mode, move a failing batch to quarantine (default True).
    :param label_columns: label names no column may carry besides the suite's own label.
    :param expectations_dir: directory of suites; overrides the connection and MLOPS_EXPECTATIONS_DIR (templated).
    :param gx_conn_id: optional GX connection (extra `expectations_dir`).
    """

    template_fields: Sequence[str] = ("data", "suite", "mode", "expectations_dir")
    operator_extra_links = (ValidationReportLink(),)

    def __init__(self, *, data: Any, suite: str, mode: str | None = None, quarantine: bool = True,
                 label_columns: Sequence[str] = (), expectations_dir: str | None = None,
                 gx_conn_id: str = "gx_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data = data
        self.suite = suite
        self.mode = mode
        self.quarantine = quarantine
        self.label_columns = list(label_columns)
        self.expectations_dir = expectations_dir
        self.gx_conn_id = gx_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.gate import Gate, batch_message, check_batch, quarantined_before, retry_message
        from airflow_mlops.hooks.gx import GXHook

        announce(context)
        hook = GXHook(gx_conn_id=self.gx_conn_id, expectations_dir=self.expectations_dir)
        suite = hook.load_suite(self.suite) or {}
        quarantine_log = _quarantine_log(context)
        earlier = quarantined_before(quarantine_log)
        if earlier:  # a retry of a task that quarantined its batch: the file is gone, the verdict stands
            raise DataValidationFailed(retry_message(earlier))
        gate = Gate.from_state_dir(label_columns=self.label_columns, context=hook.get_conn(),
                                   quarantine_log=quarantine_log)
        entry = check_batch(_as_batch(self.data), suite, gate, mode=_check_mode(self.mode), quarantine=self.quarantine)
        self.log.info("%s against suite %s: %s of %s rules passed; report %s", entry["source"], self.suite,
                      entry["statistics"]["successful_rules"], entry["statistics"]["evaluated_rules"],
                      entry["report"]["html"])
        failed = not entry["success"]
        batch = _as_batch(self.data)
        remember(self, context, {"files": [str(batch)] if isinstance(batch, Path) else [], "entry": entry})
        return _finish(self, context, entry, failed, entry["mode"] == "warn", batch_message(entry) if failed else "")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The validated file (input; a DataFrame from upstream is no dataset of its own). Validation writes
        no data (its report is a file for people), so there is no output; the verdict is a run facet."""
        return _validation_lineage(recall(self, task_instance))


class GXValidateRawBatchesOperator(TaskBoundary, BaseOperator):
    """Validate every raw file in `MLOPS_HOME/landing/<dataset>/` against the suite named like the dataset.

    Good files stay for landing; each bad file is moved to `quarantine/<dataset>/` with its report
    (fail mode). If any file was bad, or a dataset has no suite, the task raises
    DataValidationFailed listing every bad file, so nothing downstream runs this time; the next run
    lands the good files. A run with no file succeeds. Returns (and pushes as XCom `validation`)
    {success, files, passed, failed, warned, unvalidated, errors, entries, report}.

    :param datasets: datasets to validate (templated); None validates every dataset directory.
    :param mode: "fail" or "warn" for every dataset; None uses each suite's own mode (templated).
    :param require_suite: a dataset without a suite fails the task (default); False lets its files
        through unvalidated, with a warning.
    :param label_columns: every model's label: no raw column may be named like one (label leakage)
        except a label table's own label.
    :param expectations_dir: directory of suites (templated).
    :param gx_conn_id: optional GX connection (extra `expectations_dir`).
    """

    template_fields: Sequence[str] = ("datasets", "mode", "expectations_dir")
    operator_extra_links = (ValidationReportLink(),)

    def __init__(self, *, datasets: list[str] | None = None, mode: str | None = None, require_suite: bool = True,
                 label_columns: Sequence[str] = (), expectations_dir: str | None = None,
                 gx_conn_id: str = "gx_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.datasets = datasets
        self.mode = mode
        self.require_suite = require_suite
        self.label_columns = list(label_columns)
        self.expectations_dir = expectations_dir
        self.gx_conn_id = gx_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.config import paths
        from airflow_mlops.core.gate import Gate, landing_message, quarantined_before, retry_message, validate_landing
        from airflow_mlops.core.validation_report import write_run_index
        from airflow_mlops.hooks.gx import GXHook

        announce(context)
        hook = GXHook(gx_conn_id=self.gx_conn_id, expectations_dir=self.expectations_dir)
        ti = context["ti"]
        quarantine_log = _quarantine_log(context)
        earlier = quarantined_before(quarantine_log)
        if earlier:  # a retry or a cleared task of a run that already quarantined data
            raise DataValidationFailed(retry_message(earlier))
        gate = Gate.from_state_dir(label_columns=self.label_columns, context=hook.get_conn(),
                                   schemas=hook.dataset_schemas(), quarantine_log=quarantine_log)
        summary = validate_landing(paths().landing_dir, hook.suite_loader(required=self.require_suite), gate,
                                   datasets=self.datasets, mode=_check_mode(self.mode))
        summary["report"] = write_run_index(summary["entries"], gate.reports_root, dag_id=ti.dag_id,
                                            run_id=ti.run_id, task_id=ti.task_id, title="Raw batch validation",
                                            unconsumed=summary["unconsumed"])
        self.log.info("raw batches: %s file(s); passed %s, failed %s, warned %s, unvalidated %s; report %s",
                      summary["files"], summary["passed"], summary["failed"], summary["warned"],
                      summary["unvalidated"], summary["report"]["html"])
        for item in summary["unconsumed"]:
            self.log.warning("NOT CONSUMED: landing/%s — %s", item["file"], item["reason"])
        failed = not summary["success"]
        landing = paths().landing_dir
        remember(self, context, {"files": [str(landing / e["dataset"] / e["source"]) for e in summary["entries"]],
                                 "entry": summary})
        return _finish(self, context, summary, failed, False, landing_message(summary) if failed else "")

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The landing files validated (inputs, the same names LandRawBatchesOperator reads); no output: the
        gate writes no data (reports and quarantine moves are not the pipeline's datasets)."""
        return _validation_lineage(recall(self, task_instance))


def _validation_lineage(recorded: Mapping[str, Any] | None) -> Lineage | None:
    from airflow_mlops.core.lineage_names import file_name
    from airflow_mlops.openlineage.datasets import datasets, lineage

    if not recorded:
        return None
    entry = recorded["entry"]
    keep = ("success", "suite", "files", "passed", "failed", "warned", "failure_count")
    return lineage(datasets(file_name(f) for f in recorded["files"]), [], {k: entry[k] for k in keep if k in entry})


def validate_training_set(operator: BaseOperator, context: Context, lineage: Mapping[str, Any], *, suite: str,
                          mode: str = "fail", label_columns: Sequence[str] = ()) -> dict[str, Any]:
    """The training-set gate of FeastBuildTrainingSetOperator: validate the snapshot, quarantine it on failure.

    Returns the lineage plus `validation` {suite, success, mode, failure_count, result_id,
    failed_expectations, report}; the full summary goes to XCom `validation` (and the task's "Validation
    report" link). `result_id` is `<dataset>/<batch id>`, the folder of `result.json` under
    `MLOPS_HOME/reports/validation`; the training job turns these into `airflow_mlops.validation.*` tags.
    """
    from airflow_mlops.core.gate import Gate, batch_message, check_batch
    from airflow_mlops.hooks.gx import GXHook

    hook = GXHook()
    gate = Gate.from_state_dir(label_columns=label_columns, context=hook.get_conn())
    entry = check_batch(Path(str(lineage["path"])), hook.load_suite(suite) or {}, gate, mode=_check_mode(mode),
                        with_lineage=True)
    operator.log.info("training set %s against suite %s: %s of %s rules passed; report %s", entry["source"], suite,
                      entry["statistics"]["successful_rules"], entry["statistics"]["evaluated_rules"],
                      entry["report"]["html"])
    failed = not entry["success"]
    _finish(operator, context, entry, failed, entry["mode"] == "warn", batch_message(entry) if failed else "")
    compact = {k: entry[k] for k in ("suite", "success", "mode", "failure_count")}
    # result_id: where the full result is kept (reports/validation/<result_id>/result.json); GX gives an
    # ad-hoc validation no id of its own (ExpectationSuiteValidationResult.id is None outside checkpoints)
    found = {"result_id": f"{entry['dataset']}/{entry['batch_id']}",
             "failed_expectations": entry["statistics"]["unsuccessful_rules"]}
    return {**lineage, "validation": {**compact, **found, "report": entry["report"]["url"]}}
