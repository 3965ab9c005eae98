"""Build every DAG from the model specs.

- `mlops_features`: validate raw batches (GX suite per dataset; bad files quarantined, the run
  stops) → land raw batches → feast apply (only when definitions changed) → materialize; emits
  `mlops.features.<view>` for each view that got new rows (through its alias).
- `<model>__train`: point-in-time training set from Feast → train the spec's estimator (in-process
  or in a Kubernetes pod) → evaluate against the champion on the same held-out rows → register
  the version (alias `challenger`, verdict tags) → model card → [human approval] → promote
  (alias `champion`, audit trail, `mlops.model.<name>.champion` event). Scheduled on the feature
  assets of its feature views, the model's drift/performance assets (`monitoring.retrain_on`) OR the
  spec's cron schedule, and runnable by hand. Its first task, `retrain_gate`, records why the run
  retrains and skips runs started by monitoring events within `monitoring.cooldown` of the last retrain.
- `<model>__monitor`: drift, delayed-label performance, skew and feature freshness checks (see
  dags/monitoring.py), on `monitoring.schedule` OR new label files.
- `<model>__rollback`: manual; moves `champion` back to a former champion ("previous" or a version).
- `<model>__batch_predict`: scores the entity rows of the last `batch.lookback_days` with the champion
  (point-in-time features, chunked), on a new champion OR `batch.schedule`.
- `<model>__experiment` (only with `promotion.experiment`): the training DAG then ends by starting an online
  experiment instead of promote + deploy; this DAG reads it out on `update_schedule` (dags/experiments.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, chain
from airflow.sdk.definitions.asset import BaseAsset

from airflow_mlops.core.spec import ModelSpec, duration_seconds, load_specs, spec_sha256
from airflow_mlops.dags.assets import (
    champion_asset,
    champion_experiment_alias,
    champion_restored_alias,
    drift_asset,
    features_alias,
    features_asset,
    landing_asset,
    performance_asset,
)
from airflow_mlops.dags.batch import batch_dag_id, batch_inference_dag
from airflow_mlops.dags.docs import feature_dag_doc, rollback_dag_doc, training_dag_doc
from airflow_mlops.dags.experiments import experiment_dag, experiment_dag_id
from airflow_mlops.dags.monitoring import monitoring_dag, monitoring_dag_id
from airflow_mlops.operators.evaluation import EvaluateModelOperator
from airflow_mlops.operators.features import (
    FeastApplyOperator,
    FeastBuildTrainingSetOperator,
    FeastMaterializeOperator,
    LandRawBatchesOperator,
)
from airflow_mlops.operators.model_card import MLflowModelCardOperator
from airflow_mlops.operators.promotion import MLflowPromoteModelOperator, MLflowRollbackModelOperator
from airflow_mlops.operators.registry import MLflowRegisterModelOperator
from airflow_mlops.operators.retraining import MLflowRetrainGateOperator
from airflow_mlops.operators.training import SklearnTrainModelOperator
from airflow_mlops.operators.validation import GXValidateRawBatchesOperator
from airflow_mlops.sensors.feast import FeastCheckFreshnessOperator

FEATURE_DAG_ID = "mlops_features"
FEATURES_SCHEDULE = "@hourly"
START_DATE = datetime(2026, 1, 1)
# The register result for tasks that already come after it in the chain (no extra graph edge): a repeat
# (an existing version has this run's training fingerprint, nothing was registered) makes them skip.
REGISTERED = "{{ ti.xcom_pull(task_ids='register') | tojson }}"


def training_dag_id(model: str) -> str:
    return f"{model}__train"


def _default_args(owner: str) -> dict[str, Any]:
    # Stores and schedulers hiccup; two retries with a short back-off absorb that without hiding real failures.
    return {"owner": owner, "retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True}


def build_dags(specs: Iterable[ModelSpec] | None = None) -> dict[str, DAG]:
    """Every DAG keyed by dag_id; raises SpecError naming each bad spec file and field."""
    specs = list(load_specs() if specs is None else specs)
    dags = {FEATURE_DAG_ID: feature_dag(specs)}
    for spec in specs:
        dags[training_dag_id(spec.name)] = training_dag(spec)
        dags[rollback_dag_id(spec.name)] = rollback_dag(spec)
        dags[batch_dag_id(spec.name)] = batch_inference_dag(spec)
        dags[monitoring_dag_id(spec.name)] = monitoring_dag(spec, _default_args(spec.owner), START_DATE)
        if spec.promotion.experiment is not None:
            dags[experiment_dag_id(spec.name)] = experiment_dag(spec, _default_args(spec.owner), START_DATE)
    return dags


def feature_dag(specs: list[ModelSpec]) -> DAG:
    views = sorted({view for spec in specs for view in spec.features.feature_views})
    with DAG(
        dag_id=FEATURE_DAG_ID,
        # a new raw batch in the landing dir (AssetWatcher) OR the hourly backstop
        schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable(FEATURES_SCHEDULE, timezone="UTC"),
                                     assets=landing_asset()),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # two runs materializing at once would race on the online store
        default_args=_default_args("mlops"),
        tags=["mlops", "features"],
        doc_md=feature_dag_doc(views, specs),
    ) as dag:
        validate = GXValidateRawBatchesOperator(
            task_id="validate_raw_batches", label_columns=sorted({spec.features.label for spec in specs})
        )
        land = LandRawBatchesOperator(task_id="land_raw_batches", validated=validate.output)
        apply = FeastApplyOperator(task_id="feast_apply")
        # One alias per view, not the static asset: Airflow emits a static outlet on every successful
        # run, so a view without new rows would still retrain its models. Through its alias the task
        # emits `mlops.features.<view>` only when the view got new rows (see features_alias).
        materialize = FeastMaterializeOperator(
            task_id="materialize", feature_views=views or None, outlets=[features_alias(v) for v in views],
            landed=land.output,
        )
        # Warn, not fail: serving is not wired yet, and the demo's history ends weeks ago. The sensor
        # (FeastFeatureFreshnessSensor) is the hard gate for consumers that need fresh features.
        freshness = FeastCheckFreshnessOperator(
            task_id="check_freshness",
            feature_views=views or None,
            on_stale="warn",
            trigger_rule="none_failed",  # also after a skipped materialize: that is when features go stale
        )
        chain(validate, land, apply, materialize, freshness)
    return dag


def _monitoring_assets(spec: ModelSpec) -> list[Asset]:
    """The monitoring events that retrain this model (`monitoring.retrain_on`), subject to the cooldown."""
    made = {"drift": drift_asset, "performance": performance_asset}
    return [made[kind](spec.name) for kind in spec.monitoring.retrain_on]


def _training_schedule(spec: ModelSpec) -> Any:
    assets: list[Asset] = []
    if spec.training.retrain_on_features:
        assets = [features_asset(v) for v in spec.features.feature_views]
    assets += _monitoring_assets(spec)
    condition: BaseAsset | None = None
    for asset in assets:
        condition = asset if condition is None else condition | asset
    cron = spec.training.schedule
    if condition is not None and cron:
        return AssetOrTimeSchedule(timetable=CronTriggerTimetable(cron, timezone="UTC"), assets=condition)
    return condition if condition is not None else cron


def training_dag(spec: ModelSpec) -> DAG:
    feats, train = spec.features, spec.training
    with DAG(
        dag_id=training_dag_id(spec.name),
        schedule=_training_schedule(spec),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # one retrain at a time per model
        default_args=_default_args(spec.owner),
        tags=["mlops", "training", spec.name, *spec.tags],
        doc_md=training_dag_doc(spec),
    ) as dag:
        gate = MLflowRetrainGateOperator(
            task_id="retrain_gate",
            model_name=spec.name,
            cooldown=spec.monitoring.cooldown,
            gated_assets=[asset.name for asset in _monitoring_assets(spec)],
            description=spec.description or None,
        )
        build = FeastBuildTrainingSetOperator(
            task_id="build_training_set",
            model_name=spec.name,
            feature_service=feats.feature_service,
            entity_dataset=feats.entity_df.dataset,
            entity_keys=list(feats.entity_keys),
            timestamp_column=feats.entity_df.timestamp_column,
            label=feats.label,
            request_features=list(feats.entity_df.request_features),
            attributes=list(feats.entity_df.attributes),  # evaluation-only columns, kept next to the label
            lookback_days=train.lookback_days,
            validation_suite=spec.validation.suite,
            validation_mode=spec.validation.mode,
            **_heavy(spec),
        )
        fit = _train_task(spec, build.output)
        evaluate = EvaluateModelOperator(
            task_id="evaluate",
            model_name=spec.name,
            training_set=build.output,
            challenger=fit.output,
            evaluation=spec.evaluation.model_dump(mode="json"),
            label=feats.label,
            split=train.split.model_dump(),
            seed=train.seed,
            timestamp_column=feats.entity_df.timestamp_column,
            task=spec.task,
            spec_file=spec.source_file or None,
        )
        register = MLflowRegisterModelOperator(
            task_id="register",
            model_name=spec.name,
            run_id=fit.output["run_id"],
            model_uri=fit.output["model_uri"],
            evaluation=evaluate.output,
            description=spec.description or None,
            retrain=gate.output,  # "retrained because..." on the version
        )
        card = MLflowModelCardOperator(
            task_id="model_card",
            model_name=spec.name,
            registered=register.output,
            training_set=build.output,
            model_info=_model_info(spec),
        )
        chain(gate, build, fit, evaluate, register, card, *_approval(spec), *_promotion(spec, register, evaluate))
    return dag


def _promotion(spec: ModelSpec, register: Any, evaluate: Any) -> list[Any]:
    """promote (+ deploy), or, with promotion.experiment, the start of the experiment that decides it."""
    version = register.output["version"]
    experiment = spec.promotion.experiment
    if experiment is not None:
        from airflow_mlops.operators.experiments import StartExperimentOperator

        return [StartExperimentOperator(
            task_id="start_experiment", model_name=spec.name, version=version, evaluation=evaluate.output,
            experiment=experiment.model_dump(mode="json"), task=spec.task,
            primary_metric=spec.evaluation.primary_metric, url=spec.serving.url, registered=REGISTERED,
            outlets=[champion_experiment_alias(spec.name)],  # a first version (no champion) is promoted directly
        )]
    promote = MLflowPromoteModelOperator(
        task_id="promote",
        model_name=spec.name,
        version=version,
        evaluation=evaluate.output,
        registered=register.output,  # a repeat (nothing new registered) skips with register's reason
        outlets=[champion_asset(spec.name)],
    )
    return [promote, *_deploy(spec, promote)]


def _deploy(spec: ModelSpec, promote: Any) -> list[Any]:
    """Deploy the new champion to the serving app (target local/kubernetes); none = servers follow the alias."""
    serving = spec.serving
    if serving.target == "none":
        return []
    from airflow_mlops.operators.deployment import DeployModelOperator

    canary = spec.promotion.canary  # the spec allows one with target local only (ModelSpec validator)
    deploy = DeployModelOperator(
        task_id="deploy",
        model_name=spec.name,
        version=promote.output["version"],
        target=serving.target,
        url=serving.url,
        mode="canary" if canary else "full",
        canary=canary.model_dump() if canary else None,
        smoke_request=serving.smoke_request,
        kubernetes=serving.kubernetes.model_dump(),
        registered=REGISTERED,
    )
    if not canary:
        return [deploy]
    from airflow_mlops.operators.deployment import ChampionRollbackEventOperator

    # A rolled-back canary fails `deploy`, and a failed task sends no asset events: this teardown tells
    # everything scheduled on the champion asset (batch inference) that the champion moved back.
    restored = ChampionRollbackEventOperator(task_id="champion_restored", model_name=spec.name,
                                             deploy_task_id="deploy",
                                             outlets=[champion_restored_alias(spec.name)]).as_teardown()
    return [deploy, restored]


def _train_task(spec: ModelSpec, training_set: Any) -> Any:
    feats, train = spec.features, spec.training
    if train.compute.backend == "kubernetes":
        from airflow_mlops.operators.kubernetes import kubernetes_train_operator

        return kubernetes_train_operator(task_id="train", spec=spec, training_set=training_set, **_heavy(spec))
    return SklearnTrainModelOperator(
        task_id="train",
        model_name=spec.name,
        training_set=training_set,
        estimator=train.estimator,
        params=dict(train.params),
        preprocessing=train.preprocessing.model_dump(),
        split=train.split.model_dump(),
        seed=train.seed,
        label=feats.label,
        timestamp_column=feats.entity_df.timestamp_column,
        exclude_columns=spec.excluded_columns,  # entity keys and evaluation-only attributes
        spec_sha256=spec_sha256(spec),
        search=spec.search_config(),
        task=spec.task,
        primary_metric=spec.evaluation.primary_metric,
        explanations=spec.explanations_config(),
        **_heavy(spec),
        **_executor_config(spec),
    )


def _heavy(spec: ModelSpec) -> dict[str, Any]:
    """Placement of the heavy tasks: the spec's Celery queue (`training.queue`), when it is not the default.

    "default" leaves the operator's own default (`[operators] default_queue`), so a spec without a queue
    builds the same DAG as before the field existed.
    """
    return {} if spec.training.queue == "default" else {"queue": spec.training.queue}


def _executor_config(spec: ModelSpec) -> dict[str, Any]:
    """The KubernetesExecutor's pod override for an in-worker fit; nothing under any other executor."""
    from airflow_mlops.operators.executor_config import kubernetes_executor_configured, train_executor_config

    if not kubernetes_executor_configured():
        return {}
    config = train_executor_config(spec)
    return {"executor_config": config} if config else {}


def _approval(spec: ModelSpec) -> list[Any]:
    """The human gate between the model card and the promotion, when the spec asks for one."""
    if spec.promotion.approval != "manual":
        return []
    from airflow_mlops.operators.approval import MLflowApproveModelOperator

    return [MLflowApproveModelOperator(
        task_id="approve",
        model_name=spec.name,
        version="{{ ti.xcom_pull(task_ids='register')['version'] }}",
        evaluation="{{ ti.xcom_pull(task_ids='evaluate') | tojson }}",
        registered=REGISTERED,
        response_timeout=timedelta(seconds=duration_seconds(spec.promotion.approval_timeout)),
        retries=0,  # a human answer is recorded once; a retry would ask again
    )]


def _model_info(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "description": spec.description,
        "owner": spec.owner,
        "intended_use": spec.intended_use,
        "limitations": spec.limitations,
        "tags": list(spec.tags),
        "task": spec.task,
    }


def rollback_dag_id(model: str) -> str:
    return f"{model}__rollback"


def rollback_dag(spec: ModelSpec) -> DAG:
    with DAG(
        dag_id=rollback_dag_id(spec.name),
        schedule=None,  # by hand only: Trigger DAG w/ config, or POST /api/v2/dags/<id>/dagRuns
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        # Retries cover registry hiccups; a bad target raises RollbackRefused, which never retries.
        default_args=_default_args(spec.owner),
        tags=["mlops", "rollback", spec.name, *spec.tags],
        doc_md=rollback_dag_doc(spec),
        params={
            "target": Param("previous", type="string", title="Target version",
                            description='a version number that was champion before, or "previous"'),
            "reason": Param(type="string", minLength=3, title="Reason", description="kept in the audit trail"),
        },
    ) as dag:
        MLflowRollbackModelOperator(
            task_id="rollback",
            model_name=spec.name,
            target="{{ params.target }}",
            reason="{{ params.reason }}",
            outlets=[champion_asset(spec.name)],
        )
    return dag
