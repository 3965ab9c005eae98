"""Feature pipeline operators: land raw batches, apply Feast definitions, materialize, build training sets.

Thin by design: each `execute()` reads its (templated) arguments, calls FeastHook or `core`, and
returns a small JSON-able dict for XCom. pandas/feast are imported inside `execute()` only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowSkipException

from airflow_mlops.boundary import TaskBoundary
from airflow_mlops.exceptions import MLOpsError
from airflow_mlops.openlineage.record import recall, remember
from airflow_mlops.operators.validation import ValidationReportLink

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.openlineage.datasets import Lineage

FEATURE_ASSET_PREFIX = "mlops.features."


def _as_datetime(value: str | datetime | None) -> datetime | None:
    """Templated values arrive as ISO strings; naive values are UTC."""
    if value is None or value == "":
        return None
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


class LandRawBatchesOperator(TaskBoundary, BaseOperator):
    """Land every raw parquet batch in `MLOPS_HOME/landing/<dataset>/` into the offline store.

    Landing is idempotent (a batch's id is the hash of its bytes) and atomic; landed raw files move
    to `landing/<dataset>/_landed/`. Returns {datasets, batches, landed, already_landed, rows}.

    :param datasets: dataset names to land (templated); None lands every dataset directory.
    :param validated: the validation gate's summary (templated, e.g. the XComArg of
        `validate_raw_batches`); only its `landable` batch ids are landed, so a file dropped after
        the gate ran waits for the next run's gate. None lands everything (no gate).
    :param fail_if_empty: raise if no new batch was landed (default: succeed with landed=0).
    """

    template_fields: Sequence[str] = ("datasets", "validated")

    def __init__(self, *, datasets: list[str] | None = None, validated: Any = None, fail_if_empty: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.datasets = datasets
        self.validated = validated
        self.fail_if_empty = fail_if_empty

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.config import paths
        from airflow_mlops.core.offline import land_landing_dir

        home = paths()
        landable = [] if self.validated is None else list(self.validated.get("landable", []))
        allowed = None if self.validated is None else {b["batch_id"] for b in landable}
        summary = land_landing_dir(home.landing_dir, home.offline_dir, datasets=self.datasets,
                                   allowed_batch_ids=allowed, policies=row_policies(landable))
        self.log.info("landed %s new batch(es), %s rows; %s already landed; %s identical row(s) skipped; %s "
                      "corrected row(s) replaced; left for the next gate: %s", summary["landed"], summary["rows"],
                      summary["already_landed"], summary["identical_skipped"], summary["corrections_replaced"],
                      summary["deferred"] or "none")
        if self.fail_if_empty and summary["landed"] == 0:
            raise MLOpsError(
                f"no new raw batch found in {home.landing_dir}/<dataset>/*.parquet (datasets: "
                f"{summary['datasets'] or 'none'}; {summary['already_landed']} already landed). Drop parquet "
                f"files there (e.g. `airflow-mlops demo`) and re-run, or set fail_if_empty=False."
            )
        remember(self, context, {"summary": summary, "landing_dir": str(home.landing_dir),
                                 "offline_dir": str(home.offline_dir)})
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """Each landed raw file (input) and the offline partitions it was written to (output)."""
        from airflow_mlops.core.lineage_names import file_name, partition_names
        from airflow_mlops.openlineage.datasets import datasets, lineage

        recorded = recall(self, task_instance)
        if not recorded:  # failed before landing anything: nothing was read or written
            return None
        batches = recorded["summary"]["batches"]
        landing = Path(recorded["landing_dir"])
        inputs = [file_name(landing / b["dataset"] / b["source"]) for b in batches]
        outputs = partition_names(recorded["offline_dir"], [f for b in batches for f in b["files"]])
        return lineage(datasets(inputs), datasets(outputs),
                       {k: recorded["summary"][k] for k in ("landed", "already_landed", "rows")})


def row_policies(landable: list[dict[str, Any]]) -> dict[str, Any]:
    """dataset -> RowPolicy, from the gate's `landable` entries (a dataset without a suite has none)."""
    from airflow_mlops.core.row_keys import RowPolicy

    return {b["dataset"]: RowPolicy.from_json(b["rows"]["policy"]) for b in landable
            if isinstance(b.get("rows"), dict) and b["rows"].get("policy")}


class FeastApplyOperator(TaskBoundary, BaseOperator):
    """Register the feature repo's definitions in the Feast registry, only when they changed.

    Returns {applied, hash, feature_views, feature_services}.

    :param feast_conn_id: Feast connection (templated).
    :param force: apply even if the definitions' hash is unchanged.
    """

    template_fields: Sequence[str] = ("feast_conn_id",)

    def __init__(self, *, feast_conn_id: str = "feast_default", force: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feast_conn_id = feast_conn_id
        self.force = force

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.hooks.feast import FeastHook

        result = FeastHook(feast_conn_id=self.feast_conn_id).apply(force=self.force)
        self.log.info("Feast apply: %s (definitions %s)", "applied" if result["applied"] else "unchanged, skipped",
                      result["hash"][:12])
        remember(self, context, result)
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """No datasets: apply writes definitions (metadata) to the Feast registry, no feature data; the
        views appear as datasets where data flows into them (materialize). Run facet: applied + hash."""
        from airflow_mlops.openlineage.datasets import lineage

        recorded = recall(self, task_instance)
        return lineage(result={k: recorded[k] for k in ("applied", "hash")}) if recorded else None


class FeastMaterializeOperator(TaskBoundary, BaseOperator):
    """Load offline features into the online store; emit `mlops.features.<view>` only for views with new rows.

    Without `start`/`end`, a view's first run materializes from its data's earliest event time to
    the newest, and later runs are incremental (Feast's own incremental mode would start the first
    run at now - ttl). Returns {feature_views, rows, start, end, views}.

    Asset events (they start retraining, so they must mean "new feature data"). Give the task one
    `features_alias(view)` outlet (`AssetAlias("mlops.features.<view>.updates")`) per view:

    - A view got new rows: the task adds an event for `features_asset(view)` through that view's
      alias, with the extra {feature_view, mode, rows, start, end, batch_ids}. DAGs scheduled on
      the asset itself are triggered by it.
    - A view got no new rows (`up_to_date` or 0 rows): nothing is added, and an alias with no added
      event emits nothing — DAGs scheduled on that view's asset are not triggered.
    - No view got new rows: with `skip_when_up_to_date` the task raises AirflowSkipException (a
      skipped task emits no asset event); otherwise it succeeds and emits nothing through aliases.

    A static `Asset("mlops.features.<view>")` outlet still works, but Airflow emits an event for it
    on every successful run; it gets the extra when its view has new rows and an empty one otherwise.

    :param feature_views: views to materialize (templated); None means all registered views.
    :param start: window start, ISO string or datetime (templated); needs `end` or uses now.
    :param end: window end (templated); alone, it caps the automatic window.
    :param feast_conn_id: Feast connection (templated).
    :param skip_when_up_to_date: skip the task when no view got new rows (default True).
    :param landed: the landing task's summary (templated, e.g. `land_raw_batches`'s XComArg); its
        `corrected_since` makes the task re-materialize the window of rows replaced by a correction.
    """

    template_fields: Sequence[str] = ("feature_views", "start", "end", "feast_conn_id", "landed")

    def __init__(
        self,
        *,
        feature_views: list[str] | None = None,
        start: str | datetime | None = None,
        end: str | datetime | None = None,
        feast_conn_id: str = "feast_default",
        skip_when_up_to_date: bool = True,
        landed: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.landed = landed
        self.feature_views = feature_views
        self.start = start
        self.end = end
        self.feast_conn_id = feast_conn_id
        self.skip_when_up_to_date = skip_when_up_to_date

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.hooks.feast import FeastHook

        hook = FeastHook(feast_conn_id=self.feast_conn_id)
        start, end = _as_datetime(self.start), _as_datetime(self.end)
        views = list(self.feature_views) if self.feature_views else None
        corrected = dict((self.landed or {}).get("corrected_since") or {}) if isinstance(self.landed, dict) else {}
        if corrected:
            redone = hook.rematerialize_corrections(corrected, views)
            self.log.warning("corrected rows of %s: re-materialized %s", sorted(corrected), redone["feature_views"])
        if start is not None:
            result = hook.materialize(start, end or datetime.now(UTC), views)
        else:
            result = hook.materialize_new(views, end=end)
        for view, info in result["views"].items():
            self.log.info("%s: %s (%s rows, %s → %s)", view, info["mode"], info["rows"], info["start"], info["end"])
        updated = {view: info for view, info in result["views"].items() if _has_new_rows(info)}
        if not updated and self.skip_when_up_to_date:
            raise AirflowSkipException(
                f"no new feature rows: views {result['feature_views'] or '(none registered)'} are up to date, so "
                f"no {FEATURE_ASSET_PREFIX}* asset event is emitted and no retraining starts on unchanged data. "
                f"Land a new batch to materialize, or set skip_when_up_to_date=False to succeed anyway."
            )
        self._emit_events(context, updated, result["views"])
        remember(self, context, {"result": result, "project": hook.settings.project})
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """Offline partitions that held new rows (inputs) -> the feature views they went into (outputs);
        an up-to-date view read nothing new and is left out."""
        from airflow_mlops.core.lineage_names import feature_view_name, file_name
        from airflow_mlops.openlineage.datasets import datasets, lineage

        recorded = recall(self, task_instance)
        if not recorded:  # skipped (nothing new) or failed: no data moved
            return None
        views = {v: i for v, i in recorded["result"]["views"].items() if _has_new_rows(i)}
        inputs = sorted({file_name(p) for info in views.values() for p in info.get("partitions") or []})
        outputs = [feature_view_name(recorded["project"], view) for view in sorted(views)]
        return lineage(datasets(inputs), datasets(outputs), {"rows": recorded["result"]["rows"]})

    def _emit_events(self, context: Context, updated: dict[str, dict[str, Any]],
                     materialized: dict[str, dict[str, Any]]) -> None:
        from airflow_mlops.operators.assets import feature_view_of, features_asset

        for outlet in self.outlets or []:
            view = feature_view_of(outlet)
            if view is None:
                continue
            if view not in materialized:
                self.log.warning("outlet %s names feature view %s, which this task did not materialize", outlet, view)
            elif view not in updated:
                static = "" if isinstance(outlet, AssetAlias) else " (static Asset outlet: Airflow still emits one)"
                self.log.info("%s: no new rows, no event through %s%s", view, outlet, static)
            elif isinstance(outlet, AssetAlias):
                extra = _event_extra(view, updated[view])
                context["outlet_events"][outlet].add(features_asset(view), extra=extra)
                self.log.info("%s: event for %s (%s rows)", view, features_asset(view).name, extra["rows"])
            else:
                context["outlet_events"][outlet].extra = _event_extra(view, updated[view])


def _event_extra(view: str, info: dict[str, Any]) -> dict[str, Any]:
    """The asset event's extra: the view's result minus its partition paths (lineage only, not event API)."""
    return {"feature_view": view, **{k: v for k, v in info.items() if k != "partitions"}}


def _has_new_rows(info: dict[str, Any]) -> bool:
    return bool(info["mode"] != "up_to_date" and info["rows"] > 0)


class FeastBuildTrainingSetOperator(TaskBoundary, BaseOperator):
    """Build a point-in-time training set from a label dataset and a feature service.

    Reads the newest `lookback_days` of `entity_dataset` from the offline store, joins the feature
    service's features as of each row's time (`core.point_in_time`, docs/point_in_time.md), writes a
    content-addressed parquet snapshot under `MLOPS_HOME/training_sets/<model_name>/` and returns its
    lineage: {path, sha256, rows, start, end, feature_service, feature_views, columns, missing, join}
    (`join`: the point-in-time path that ran, asof or feast).

    :param feature_service: Feast feature service name (templated).
    :param entity_dataset: offline-store dataset with entity keys, event time and label (templated).
    :param entity_keys: join keys, e.g. ["driver_id"].
    :param timestamp_column: event-time column of the entity dataset.
    :param label: label column (stored as `label_column`: BaseOperator.label is taken).
    :param request_features: request-time columns carried from the entity dataset.
    :param attributes: entity-dataset columns carried for evaluation only (fairness groups, slices), never model
        inputs (the spec's `features.entity_df.attributes`); listed in the lineage as `attributes`.
    :param lookback_days: days of label data, counted back from the newest row (templated).
    :param model_name: model the set is for; names the output folder (templated).
    :param feast_conn_id: Feast connection (templated).
    :param validation_suite: GX suite the snapshot must pass (the spec's `validation.suite`); on
        failure in fail mode the snapshot moves to `quarantine/<suite dataset>/` and the task raises
        DataValidationFailed. The lineage then carries `validation` {suite, success, mode, failure_count,
        result_id, failed_expectations, report}; the full summary is XCom `validation` ("Validation
        report" link).
    :param validation_mode: "fail" or "warn" (the spec's `validation.mode`).
    """

    template_fields: Sequence[str] = (
        "feature_service", "entity_dataset", "lookback_days", "model_name", "feast_conn_id",
    )
    operator_extra_links = (ValidationReportLink(),)

    def __init__(
        self,
        *,
        feature_service: str,
        entity_dataset: str,
        entity_keys: list[str],
        timestamp_column: str,
        label: str,
        request_features: list[str] | None = None,
        attributes: list[str] | None = None,
        lookback_days: int | str = 30,
        model_name: str,
        feast_conn_id: str = "feast_default",
        validation_suite: str | None = None,
        validation_mode: str = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.validation_suite = validation_suite
        self.validation_mode = validation_mode
        self.feature_service = feature_service
        self.entity_dataset = entity_dataset
        self.entity_keys = list(entity_keys)
        self.timestamp_column = timestamp_column
        self.label_column = label  # BaseOperator.label is the task's display label
        self.request_features = list(request_features or [])
        self.attributes = list(attributes or [])
        self.lookback_days = lookback_days
        self.model_name = model_name
        self.feast_conn_id = feast_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.config import paths
        from airflow_mlops.core.feature_repo import feast_output_to_log
        from airflow_mlops.core.offline import partitions_between
        from airflow_mlops.core.training_set import build_training_set, load_entity_df
        from airflow_mlops.hooks.feast import FeastHook

        if self.validation_suite:
            from airflow_mlops.operators.validation import announce

            announce(context)
        home = paths()
        columns = [*self.entity_keys, self.timestamp_column, self.label_column, *self.request_features,
                   *self.attributes]
        entity_df = load_entity_df(home.dataset_dir(self.entity_dataset), self.timestamp_column,
                                   int(self.lookback_days), columns)
        hook = FeastHook(feast_conn_id=self.feast_conn_id)
        store = hook.get_store()
        with feast_output_to_log(self.log):
            lineage = build_training_set(
                store, feature_service=self.feature_service, entity_df=entity_df, entity_keys=self.entity_keys,
                timestamp_column=self.timestamp_column, label=self.label_column, request_features=self.request_features,
                out_dir=home.training_sets_dir / self.model_name, attributes=self.attributes,
            )
        self.log.info("training set %s: %s rows (%s → %s), missing %s", lineage["path"], lineage["rows"],
                      lineage["start"], lineage["end"], lineage["missing"])
        if self.validation_suite:
            from airflow_mlops.operators.validation import validate_training_set

            lineage = validate_training_set(self, context, lineage, suite=self.validation_suite,
                                            mode=self.validation_mode, label_columns=[self.label_column])
        read = partitions_between(home.dataset_dir(self.entity_dataset), lineage.get("start"), lineage.get("end"))
        remember(self, context, {"lineage": lineage, "project": hook.settings.project, "entity_partitions": read})
        return lineage

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Lineage | None:
        """The feature views and the label dataset's partitions read (inputs) -> the snapshot file (output),
        versioned by its sha256 and carrying its GX validation (`airflowMlopsTrainingSet` facet)."""
        from airflow_mlops.core.lineage_names import feature_view_name, file_name
        from airflow_mlops.openlineage.datasets import datasets, lineage, training_set_dataset

        recorded = recall(self, task_instance)
        if not recorded:  # failed (a quarantined snapshot is no training set) or never got that far
            return None
        built = recorded["lineage"]
        inputs = [feature_view_name(recorded["project"], view) for view in sorted(built.get("feature_views") or {})]
        inputs += [file_name(p) for p in recorded["entity_partitions"]]
        return lineage(datasets(inputs), [training_set_dataset(built)])
