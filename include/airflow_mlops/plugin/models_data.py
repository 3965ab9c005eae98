"""What the Models pages show, read from where the pipeline recorded it (no computation of our own).

- Which models exist and which DAGs belong to them: the model specs (`core.spec.load_specs`).
- Versions, aliases, verdicts, lineage: the MLflow registry (`hooks.mlflow.MLflowHook`): version tags
  written by the register task (`core.lineage` keys, `airflow_mlops.evaluation.*`), aliases read one
  by one (`search_model_versions` returns empty aliases in MLflow 3), the audit trail tags
  (`core.audit`).
- Model card and evaluation report: JSON/HTML artifacts of the version's MLflow run.
- Drift/performance/skew/freshness: `core.monitoring_history` time series.

mlflow is imported inside functions only (the plugin package stays light, ruff TID253).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core import audit, lineage

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from airflow_mlops.core.spec import ModelSpec

log = logging.getLogger(__name__)

EVAL_PREFIX = "airflow_mlops.evaluation."
ALIASES = ("champion", "challenger")
# Documents of a version's MLflow run the UI links to: name -> artifact path.
DOCUMENTS = {"evaluation": "evaluation/report.html", "model_card": "model_card/model_card.html"}
DOCUMENT_JSON = {"evaluation": "evaluation/report.json", "model_card": "model_card/model_card.json"}
MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")
VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,18}")


class NotFound(LookupError):
    """An unknown model, version or document; the message says what exists (the API answers 404)."""


def model_dags(model: str) -> dict[str, str]:
    """The DAGs the factory generates for a model (dags/factory.py naming)."""
    return {role: f"{model}__{role}" for role in ("train", "rollback", "batch_predict", "monitor")}


def model_of_dag(dag_id: str, specs: Mapping[str, ModelSpec]) -> str | None:
    """`<model>__<role>` -> model, when `model` has a spec."""
    model, sep, _ = dag_id.rpartition("__")
    return model if sep and model in specs else None


def specs() -> dict[str, ModelSpec]:
    from airflow_mlops.core.spec import load_specs

    return {spec.name: spec for spec in load_specs()}


def spec_or_404(name: str, known: Mapping[str, ModelSpec]) -> ModelSpec:
    if name not in known:
        raise NotFound(f"unknown model {name!r}; known models: {', '.join(sorted(known)) or 'none'} "
                       "(one per spec file in the models directory)")
    return known[name]


def client() -> MlflowClient:
    from airflow_mlops.hooks.mlflow import MLflowHook

    return MLflowHook().get_conn()


# --------------------------------------------------------------------------------------------- registry
def registered_tags(mlflow: MlflowClient, name: str) -> dict[str, str] | None:
    """The registered model's tags, None when it was never registered."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(mlflow.get_registered_model(name).tags or {})
    except MlflowException as exc:
        if exc.error_code in MISSING_CODES:
            return None
        raise


def alias_versions(mlflow: MlflowClient, name: str) -> dict[str, str]:
    from airflow_mlops.hooks.mlflow_registry import ModelRegistry

    registry = ModelRegistry(mlflow, name)
    found = {alias: registry.alias_version(alias) for alias in ALIASES}
    return {alias: version for alias, version in found.items() if version}


def version_row(mv: Any, aliases: Mapping[str, str]) -> dict[str, Any]:
    """One version as the timeline shows it: tags turned into named fields."""
    tags = dict(mv.tags or {})
    version = str(mv.version)
    return {
        "version": version,
        "created": _ms_iso(mv.creation_timestamp),
        "mlflow_run_id": mv.run_id,
        "aliases": sorted(alias for alias, held in aliases.items() if held == version),
        "description": mv.description or "",
        "airflow": {"dag_id": tags.get(lineage.TAG_DAG_ID), "run_id": tags.get(lineage.TAG_RUN_ID),
                    "task_id": tags.get(lineage.TAG_TASK_ID)},
        "trigger": run_trigger(tags.get(lineage.TAG_RUN_ID)),
        # "retrained because ..." written by the training DAG's retrain_gate (drift, performance, features, ...)
        "retrain_reason": tags.get(lineage.TAG_RETRAIN_REASON) or None,
        "verdict": _verdict(tags),
        # what the version predicts (absent on versions trained before tasks existed: binary) and, for a classifier,
        # its classes in the order of its probability columns
        "task": tags.get(lineage.TAG_TASK) or "binary",
        "classes": _json_list(tags.get(lineage.TAG_CLASSES)),
        "lineage": {key.removeprefix(lineage.TAG_PREFIX): tags[key] for key in lineage.TRAINING_TAGS if key in tags},
        "promotion": {key.removeprefix(lineage.TAG_PREFIX): value for key, value in tags.items()
                      if key in (audit.TAG_PROMOTED_AT, audit.TAG_PROMOTED_BY, audit.TAG_PROMOTION_REASON,
                                 audit.TAG_DEMOTED_AT, audit.TAG_DECISION, audit.TAG_DECIDED_BY)},
    }


def _verdict(tags: Mapping[str, str]) -> dict[str, Any] | None:
    found = {key.removeprefix(EVAL_PREFIX): value for key, value in tags.items() if key.startswith(EVAL_PREFIX)}
    if not found:
        return None
    return {**found, "value": _number(found.get("value")), "gain": _number(found.get("gain"))}


def run_trigger(run_id: str | None) -> str | None:
    """Why an Airflow run started, from its run id prefix: manual, scheduled, asset_triggered, backfill."""
    if not run_id or "__" not in run_id:
        return None
    return run_id.split("__", 1)[0]


def versions(mlflow: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every version, newest first (empty when the model was never registered)."""
    if registered_tags(mlflow, name) is None:
        return []
    aliases = alias_versions(mlflow, name)
    found = mlflow.search_model_versions(f"name = '{name}'")
    return [version_row(mv, aliases) for mv in sorted(found, key=lambda mv: -int(mv.version))]


def audit_events(mlflow: MlflowClient, name: str) -> list[dict[str, Any]]:
    from dataclasses import asdict

    return [asdict(event) for event in audit.history(registered_tags(mlflow, name) or {})]


def experiment(mlflow: MlflowClient, name: str) -> tuple[Any, list[dict[str, Any]], list[audit.AuditEvent]]:
    """(the experiment record or None, its looks from the history run, the audit trail) of a model."""
    from airflow_mlops.core.experiment_history import read_history
    from airflow_mlops.core.experiments import read_record

    tags = registered_tags(mlflow, name) or {}
    record = read_record(tags)
    looks = read_history(mlflow, record.run_id) if record is not None and record.run_id else []
    return record, looks, audit.history(tags)


def experiment_summary(mlflow: MlflowClient, name: str) -> dict[str, Any] | None:
    """The head of the experiment record for the model page (its link to the readout), None without one."""
    from airflow_mlops.core.experiments import read_record

    record = read_record(registered_tags(mlflow, name) or {})
    if record is None:
        return None
    return {"id": record.id, "type": record.type, "status": record.status, "champion": record.champion,
            "candidate": record.candidate, "arms": record.arms, "decision": record.decision}


def is_version_number(version: str) -> bool:
    """A registry version as MLflow stores it: ASCII digits, 1 .. 2**63-1. `str.isdigit` also takes other
    scripts' digits ('\u0663' would be read as 3) and a 23-digit number overflows the store (a 500)."""
    return bool(VERSION_NUMBER.fullmatch(version)) and int(version) < 2**63


def version_or_404(mlflow: MlflowClient, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    if is_version_number(version):
        try:
            return mlflow.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code not in MISSING_CODES:
                raise
    known = sorted(int(mv.version) for mv in mlflow.search_model_versions(f"name = '{name}'"))
    raise NotFound(f"model {name!r} has no version {version!r}; existing versions: "
                   f"{', '.join(map(str, known)) or 'none (nothing registered yet)'}")


def run_artifact(mlflow: MlflowClient, run_id: str | None, path: str) -> str | None:
    """The text of one artifact of a run, None when it was never logged."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError) as exc:
            log.debug("no artifact %s in run %s: %s", path, run_id, exc)
            return None
        return Path(local).read_text(encoding="utf-8")


def run_json(mlflow: MlflowClient, run_id: str | None, path: str) -> dict[str, Any] | None:
    text = run_artifact(mlflow, run_id, path)
    if text is None:
        return None
    try:
        return dict(json.loads(text))
    except (ValueError, TypeError):
        log.warning("artifact %s of run %s is not a JSON object; shown as missing", path, run_id)
        return None


def evaluation_summary(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The evaluation report minus the bulky curves: metrics of both models, comparison, verdict, slices."""
    if not report:
        return None
    keep = ("rows", "positives", "task", "classes", "primary_metric", "challenger", "champion", "comparison",
            "verdict", "thresholds", "summary", "slices")
    return {key: report[key] for key in keep if key in report}


# --------------------------------------------------------------------------------------------- monitoring
def monitoring(name: str, kind: str | None, limit: int = 500) -> list[dict[str, Any]]:
    from airflow_mlops.core import monitoring_history

    return monitoring_history.history(name, kind, limit=limit)


def latest_check(name: str, kind: str) -> dict[str, Any] | None:
    from airflow_mlops.core import monitoring_history

    return monitoring_history.latest(name, kind)


def _ms_iso(stamp: int | None) -> str | None:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(stamp / 1000, UTC).isoformat(timespec="seconds") if stamp else None


def _json_list(text: str | None) -> list[Any] | None:
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "None") else None
    except ValueError:
        return None


def model_run_or_404(mlflow: MlflowClient, name: str, run_id: str) -> Any:
    """A training run of model `name` (logged to the experiment named after the model); else NotFound."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow.get_run(run_id)
        experiment = mlflow.get_experiment(run.info.experiment_id)
    except MlflowException as exc:
        if exc.error_code not in MISSING_CODES:
            raise
        raise NotFound(f"no MLflow run {run_id!r}") from None
    if experiment.name != name:
        raise NotFound(f"MLflow run {run_id!r} is not a training run of model {name!r} "
                       f"(it belongs to experiment {experiment.name!r})")
    return run
