"""Online experiments: start one as the training DAG's deploy step, read it out on a schedule.

`StartExperimentOperator` replaces promote + deploy when the spec has `promotion.experiment`: instead of moving
`champion` it writes the experiment record (core/experiments.py) under the registry lease with an audit entry,
and waits until the serving app routes by it (the app reads the record in its alias poll). The training DAG
ends there. `ExperimentReadoutOperator` (the `<model>__experiment` DAG, on `update_schedule`) joins the delayed
labels of the experiment's predictions per arm, takes one look (core/experiment_readout.py) and records it:
promote (champion moves to the winner), rollback (the experiment ends, the champion keeps all traffic),
extend, or new bandit shares. On promote/rollback it emits `mlops.experiment.<name>` with the readout as extra
(and `mlops.model.<name>.champion` on promote), through AssetAlias outlets: no event in runs that decide nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import AssetAlias, BaseOperator

from airflow_mlops.boundary import TaskBoundary

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_mlops.core.audit import AuditEvent
    from airflow_mlops.core.experiment_readout import Look
    from airflow_mlops.core.experiment_registry import Who
    from airflow_mlops.core.experiments import ExperimentRecord
    from airflow_mlops.core.model_registry import ModelRegistry
    from airflow_mlops.core.performance import Joined
    from airflow_mlops.core.spec import Experiment


def who_of(context: Context) -> Who:
    """The actor, trigger and run identity of this task (lease owner, audit entries)."""
    from airflow_mlops.core.experiment_registry import Who
    from airflow_mlops.operators.promotion import actor_of, trigger_of

    ti, dag_run = context.get("ti"), context.get("dag_run")
    return Who(actor_of(context), trigger_of(context), getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", None),
               context.get("run_id") or getattr(dag_run, "run_id", None), getattr(ti, "task_id", None))


def emit_champion(operator: BaseOperator, context: Context, model: str, event: AuditEvent) -> None:
    """A `mlops.model.<name>.champion` event through the champion-experiment alias outlet, when there is one."""
    from airflow_mlops.operators.assets import champion_asset, champion_experiment_alias

    extra = {"version": event.version, "previous": event.previous, "action": event.action, "reason": event.reason,
             "audit_seq": event.seq}
    _add_event(operator, context, champion_experiment_alias(model).name, champion_asset(model), extra)


def _add_event(operator: BaseOperator, context: Context, alias_name: str, asset: Any, extra: Mapping[str, Any]) -> None:
    for outlet in operator.outlets or []:
        if isinstance(outlet, AssetAlias) and outlet.name == alias_name:
            context["outlet_events"][outlet].add(asset, extra=dict(extra))
            operator.log.info("asset event %s (through %s)", asset.name, alias_name)
            return
    operator.log.warning("no %s outlet on this task: no event for %s", alias_name, asset.name)


class StartExperimentOperator(TaskBoundary, BaseOperator):
    """Start an online experiment between the champion and the evaluated `version` (the deploy step).

    Skips like promotion when the evaluation does not recommend the version (tagged not_promoted) or register
    repeated a version. With no champion yet, `version` becomes the first champion (audit "promote", event
    through the `champion_experiment_alias` outlet). Otherwise, under the registry lease, it re-checks that
    `challenger` is still `version` and `champion` the version the evaluation compared with (PromotionConflict,
    no retry, otherwise), supersedes a running experiment, writes the record with an `experiment_start` audit
    entry, opens the experiment's history run, and waits until the serving app at `url` routes by it.
    A retried task finds the record its own run wrote and only waits again.

    :param model_name: registered model name. (templated)
    :param version: the registered challenger version. (templated)
    :param evaluation: the evaluation task's result (promote, champion_version, summary). (templated)
    :param experiment: the spec's promotion.experiment as a dict. (templated)
    :param task: the spec's task (binary | regression); `primary_metric`: evaluation.primary_metric.
    :param url: the serving app (spec serving.url); default: the host of `serving_conn_id`. (templated)
    :param wait_for_serving: wait for the app to route the experiment (False: the record is enough).
    :param registered: the register task's result (a repeat skips). (templated)
    :return: {name, version, champion, experiment (the record as a dict, or None), promoted, serving}
    """

    template_fields: Sequence[str] = ("model_name", "version", "evaluation", "experiment", "url", "registered")
    template_fields_renderers = {"evaluation": "json", "experiment": "json", "registered": "json"}
    ui_color = "#e8dcf7"

    def __init__(self, *, model_name: str, version: Any, evaluation: Any, experiment: Any, task: str = "binary",
                 primary_metric: str = "roc_auc", url: str | None = None, wait_for_serving: bool = True,
                 registered: Any = None, serving_conn_id: str = "mlops_serving_default",
                 mlflow_conn_id: str = "mlflow_default", ready_timeout: float = 180.0, poll_interval: float = 2.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name, self.version, self.evaluation, self.experiment = model_name, version, evaluation, experiment
        self.task, self.primary_metric, self.url, self.wait_for_serving = task, primary_metric, url, wait_for_serving
        self.registered, self.serving_conn_id, self.mlflow_conn_id = registered, serving_conn_id, mlflow_conn_id
        self.ready_timeout, self.poll_interval = ready_timeout, poll_interval

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.core.experiment_registry import first_champion
        from airflow_mlops.core.xcom import as_dict
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.hooks.mlflow_registry import CHAMPION, ModelRegistry
        from airflow_mlops.operators.promotion import skip_not_promoted
        from airflow_mlops.operators.registry import skip_if_repeat

        skip_if_repeat(self.registered, "experiment start")
        evaluation, candidate, spec, who = as_dict(self.evaluation), str(self.version), self._spec(), who_of(context)
        if not evaluation.get("promote"):
            skip_not_promoted(self.mlflow_conn_id, self.model_name, candidate, evaluation, context)
        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()
        result: dict[str, Any] = {"name": self.model_name, "version": candidate, "promoted": False, "serving": None}
        with hook.activated() as client:
            registry = ModelRegistry(client, self.model_name)
            champion = registry.alias_version(CHAMPION)
            if champion is None:
                event = first_champion(registry, candidate, evaluation.get("champion_version"), who,
                                       datetime.now(UTC), str(evaluation.get("summary") or "evaluation passed"))
                emit_champion(self, context, self.model_name, event)
                return {**result, "champion": candidate, "experiment": None, "promoted": True}
            record = self._started(registry, hook, spec, candidate, evaluation.get("champion_version"), who)
        if self.wait_for_serving:
            result["serving"] = self._wait_served(record.id)
        return {**result, "champion": record.champion, "experiment": asdict(record)}

    def _spec(self) -> Experiment:
        from airflow_mlops.core.spec import Experiment
        from airflow_mlops.core.xcom import as_dict

        return Experiment.model_validate(as_dict(self.experiment))

    def _started(self, registry: ModelRegistry, hook: Any, spec: Experiment, candidate: str, evaluated: str | None,
                 who: Who) -> ExperimentRecord:
        from airflow_mlops.core import experiment_history as history
        from airflow_mlops.core.experiment_registry import start
        from airflow_mlops.core.experiments import experiment_id

        existing = registry.experiment()
        if existing is not None and existing.candidate == candidate and existing.started_by == who.ids and who.run_id:
            self.log.info("%s: experiment %s was started by this run already; waiting for serving only",
                          self.model_name, existing.id)
            return existing
        at = datetime.now(UTC)
        mlflow_experiment = hook.experiment_id(history.history_experiment(self.model_name))
        run_id = history.start_run(registry.client, mlflow_experiment, self.model_name, experiment_id(candidate, at),
                                   spec.model_dump(mode="json"))
        record = start(registry, spec, task=self.task, primary_metric=self.primary_metric, candidate=candidate,
                       evaluated_champion=evaluated, who=who, at=at, run_id=run_id)
        history.log_start(registry.client, record)
        if existing is not None and existing.running:
            history.end_run(registry.client, existing.run_id)  # superseded
        self.log.info("%s: %s experiment %s started: %s; metric %s, ends by %s", self.model_name, record.type,
                      record.id, record.arms, record.metric, record.deadline().isoformat())
        return record

    def _wait_served(self, experiment_id: str) -> dict[str, Any]:
        from airflow_mlops.hooks.serving import ServingHook

        with ServingHook(self.serving_conn_id, url=self.url).get_conn() as client:
            status = client.wait_experiment(experiment_id, self.ready_timeout, self.poll_interval)
        self.log.info("%s routes experiment %s: %s", client.url, experiment_id, status.get("experiment"))
        return {"url": client.url, "experiment": status.get("experiment")}


class ExperimentReadoutOperator(TaskBoundary, BaseOperator):
    """One look at the running experiment of `model_name`: promote, roll back, extend, or new bandit shares.

    Reads the experiment's predictions (prediction-log rows with route `experiment:<id>` since it started), joins
    the delayed labels (spec monitoring.performance.labels, as the performance check does), computes the metric
    per arm and the always-valid interval of the difference (A/B) or the new shares (bandit), and records the
    look under the registry lease (core/experiment_registry.conclude) and in the experiment's MLflow history run.
    Skips when no experiment runs. Outlets: `experiment_alias(model)` (the readout as the event's extra, on
    promote/rollback) and `champion_experiment_alias(model)` (on promote).

    :param model_name: registered model name. (templated)
    :param labels: the spec's monitoring.performance.labels as a dict. (templated)
    :param label: the spec's features.label (when labels.label_column is unset).
    :param entity_keys: the spec's features.entity_keys (labels.join entity_time).
    :param now: the time of the look, ISO text (default: now; tests move it past max_duration). (templated)
    :return: the readout: {model, experiment, type, status, decision, reason, winner, champion, candidate, metric,
        looks, labels, values, interval, shares, audit_seq, counts, at}
    """

    template_fields: Sequence[str] = ("model_name", "labels", "now")
    template_fields_renderers = {"labels": "json"}
    ui_color = "#e8dcf7"

    def __init__(self, *, model_name: str, label: str, entity_keys: Sequence[str], labels: Any = None,
                 now: str | None = None, mlflow_conn_id: str = "mlflow_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model_name, self.labels, self.now, self.mlflow_conn_id = model_name, labels, now, mlflow_conn_id
        self.label_column, self.entity_keys = label, list(entity_keys)  # BaseOperator.label is taken

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from airflow_mlops.core import experiment_history as history
        from airflow_mlops.core.experiment_readout import take_look
        from airflow_mlops.core.experiment_registry import conclude
        from airflow_mlops.hooks.mlflow import MLflowHook
        from airflow_mlops.hooks.mlflow_registry import ModelRegistry

        now = datetime.fromisoformat(self.now) if self.now else datetime.now(UTC)
        hook = MLflowHook(self.mlflow_conn_id)
        hook.check_backend()
        with hook.activated() as client:
            registry = ModelRegistry(client, self.model_name)
            record = registry.experiment()
            if record is None or not record.running:
                raise AirflowSkipException(f"{self.model_name}: no experiment is running"
                                           + (f" (the last, {record.id}, is {record.status})" if record else ""))
            joined, served = self._labelled(record, now)
            look = take_look(record, joined.frame, now, served)
            updated, event = conclude(registry, record.id, look, who_of(context))
            history.log_look(client, updated, look)
            if not updated.running:
                history.end_run(client, updated.run_id)
        out = readout(self.model_name, updated, look, event, joined.counts)
        self.log.info("%s experiment %s, look %s: %s. %s", self.model_name, updated.id, updated.looks, look.decision,
                      look.reason)
        if not updated.running:
            self._emit(context, out, event)
        return out

    def _labelled(self, record: ExperimentRecord, now: datetime) -> tuple[Joined, dict[str, int]]:
        """The experiment's logged predictions joined to the delayed labels, and its predictions per arm."""
        from datetime import timedelta

        from airflow_mlops.core.performance import join_labels, load_labels
        from airflow_mlops.core.prediction_window import read_prediction_window
        from airflow_mlops.core.spec import Labels, duration_seconds
        from airflow_mlops.core.xcom import as_dict
        from airflow_mlops.triggers.labels import labels_dir_of

        settings = Labels.model_validate(as_dict(self.labels) if self.labels else {})
        frame = read_prediction_window(self.model_name, record.started(), now).frame
        frame = frame[frame["route"] == record.route] if len(frame) else frame
        served = {str(v): int(n) for v, n in frame["model_version"].astype(str).value_counts().items()}
        labels = load_labels(labels_dir_of(self.model_name, settings.path),
                             label_column=settings.label_column or self.label_column, join=settings.join,
                             entity_keys=self.entity_keys, timestamp_column=settings.timestamp_column)
        joined = join_labels(frame, labels, join=settings.join, entity_keys=self.entity_keys,
                             timestamp_column=settings.timestamp_column,
                             tolerance=timedelta(seconds=duration_seconds(settings.join_tolerance)),
                             start=record.started(), end=now)
        return joined, served

    def _emit(self, context: Context, out: Mapping[str, Any], event: AuditEvent | None) -> None:
        from airflow_mlops.operators.assets import experiment_alias, experiment_asset

        _add_event(self, context, experiment_alias(self.model_name).name, experiment_asset(self.model_name), out)
        if event is not None and event.action == "promote":
            emit_champion(self, context, self.model_name, event)


def readout(model: str, record: ExperimentRecord, look: Look, event: AuditEvent | None,
            counts: Mapping[str, int]) -> dict[str, Any]:
    """The task's result and the asset event's extra (JSON-able)."""
    return {"model": model, "experiment": record.id, "type": record.type, "status": record.status,
            "champion": record.champion, "candidate": record.candidate, "metric": record.metric,
            "looks": record.looks, **look.to_dict(), "decision": record.decision or look.decision,
            "reason": record.reason or look.reason, "audit_seq": event.seq if event is not None else None,
            "counts": dict(counts)}
