"""Model specs: one YAML file per model in include/models/, validated strictly.

Parsing imports only pydantic and yaml: DAG files call this at parse time, so pandas, sklearn,
mlflow, feast, evidently and great_expectations must never be imported from here.
Deep checks that need those libraries (estimator importable, feature service exists) live in
`core/checks.py` and run from `airflow-mlops check`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_mlops.core.tasks import (
    ALL_METRICS,
    DEFAULT_METRICS,
    DEFAULT_PRIMARY,
    METRICS_BY_TASK,
    TaskType,
    decide_task,
)
from airflow_mlops.exceptions import SpecError

NAME_RE = r"^[a-z][a-z0-9_]{1,62}$"
IMPORT_PATH_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
K8S_NAME = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$"  # a Kubernetes object name
DURATION = r"^\d+[smhd]$"  # 90s, 15m, 6h, 7d (see duration_seconds)
# A Celery queue name as `airflow celery worker --queues a,b` takes it: no comma, no space.
QUEUE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$"
METRICS = METRICS_BY_TASK["binary"]  # the binary metrics (the only task before `task`); spec fields take ALL_METRICS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EntitySource(_Strict):
    """The label table: entity keys, event timestamp, request-time features and the label."""

    dataset: str = Field(pattern=NAME_RE, description="offline-store dataset holding labelled events")
    timestamp_column: str = "event_timestamp"
    request_features: tuple[str, ...] = Field(
        default=(), description="columns used as-is from the label table"
    )
    attributes: tuple[str, ...] = Field(
        default=(), description="label-table columns carried into the training set for evaluation only (fairness "
                                "groups, slices), never model inputs: a protected attribute the model must not use")


class Features(_Strict):
    feature_service: str = Field(pattern=NAME_RE)
    feature_views: tuple[str, ...] = Field(
        min_length=1, description="views of the service; their assets trigger retraining"
    )
    entity_keys: tuple[str, ...] = Field(min_length=1)
    entity_df: EntitySource
    label: str

    @model_validator(mode="after")
    def _attributes_are_their_own_columns(self) -> Features:
        """An attribute is a label-table column the training set carries for evaluation only; one that is already
        another column of the training set (or listed twice) is a mistake in the spec, refused with the fix."""
        entity = self.entity_df
        attributes = entity.attributes
        problems = []
        repeated = sorted({c for c in attributes if attributes.count(c) > 1})
        if repeated:
            problems.append(f"{repeated} listed more than once")
        inputs = [c for c in attributes if c in entity.request_features]
        if inputs:
            problems.append(f"{inputs} are also request_features, which are model inputs; a column the model must "
                            "not use belongs in attributes only, one it uses in request_features only")
        keys = [c for c in attributes if c in self.entity_keys]
        if keys:
            problems.append(f"{keys} are entity_keys, which the training set carries already and never uses as "
                            "model inputs")
        carried = [c for c in attributes if c in (self.label, entity.timestamp_column)]
        if carried:
            problems.append(f"{carried} are the label or the timestamp_column, which the training set carries already")
        if problems:
            raise ValueError("entity_df.attributes: " + "; ".join(problems) + "; remove them from attributes")
        return self


class Validation(_Strict):
    suite: str | None = Field(default=None, pattern=NAME_RE)
    mode: Literal["fail", "warn"] = "fail"


class Split(_Strict):
    method: Literal["time", "random"] = "time"
    test_size: float = Field(default=0.2, gt=0.0, lt=0.9)


class Preprocessing(_Strict):
    impute: Literal["median", "mean", "most_frequent", "none"] = "median"
    scale: bool = False


class KubernetesCompute(_Strict):
    """Where the training pod runs and what it may use (KubernetesPodOperator arguments)."""

    image: str = Field(default="airflow-mlops:latest", description="image with this project installed")
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    service_account: str | None = None
    cpu: str = Field(default="1", pattern=r"^\d+(\.\d+)?m?$")
    memory: str = Field(default="2Gi", pattern=r"^\d+(Ki|Mi|Gi|Ti|K|M|G|T)?$")
    state_volume_claim: str = Field(
        default="mlops-state", description="PVC holding MLOPS_HOME (training-set snapshots)"
    )
    node_selector: dict[str, str] = Field(default_factory=dict)
    startup_timeout_seconds: int = Field(default=600, ge=30)


class Compute(_Strict):
    backend: Literal["local", "kubernetes"] = "local"
    kubernetes: KubernetesCompute = KubernetesCompute()


class Distribution(_Strict):
    """A random-search distribution (scipy.stats, which scikit-learn depends on): `uniform` and `loguniform`
    draw floats in [low, high]; `randint` draws integers in [low, high)."""

    distribution: Literal["uniform", "loguniform", "randint"]
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> Distribution:
        if self.high <= self.low:
            raise ValueError(f"high must be above low, got low={self.low} high={self.high}")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got low={self.low}")
        if self.distribution == "randint" and not (self.low.is_integer() and self.high.is_integer()):
            raise ValueError(f"randint needs integer bounds, got low={self.low} high={self.high}")
        return self


SEARCH_PARAM_RE = r"^[A-Za-z_]\w*$"


class Search(_Strict):
    """Hyperparameter search with scikit-learn's own search classes, on the training part of the split only.

    `space` maps estimator constructor arguments to a list of values, or (random, halving) a distribution.
    `cv` defaults to the split method: time-ordered folds for a time split, stratified k-fold for a random one.
    `metric` defaults to `evaluation.primary_metric`. `max_seconds` stops a grid or random search between
    candidates (the best of those evaluated wins, and the run says how many were); a halving search is one
    unit whose budget is its resources, so it does not take `max_seconds`.
    """

    method: Literal["grid", "random", "halving"] = "random"
    space: dict[str, list[Any] | Distribution] = Field(min_length=1)
    cv: Literal["time", "kfold"] | None = None
    folds: int = Field(default=3, ge=2, le=20)
    n_iter: int = Field(default=10, ge=1, le=10_000, description="candidates (random; halving with distributions)")
    metric: Literal[ALL_METRICS] | None = None  # type: ignore[valid-type]
    max_seconds: int | None = Field(default=None, ge=1)

    @field_validator("space")
    @classmethod
    def _space(cls, value: dict[str, list[Any] | Distribution]) -> dict[str, list[Any] | Distribution]:
        for name, values in value.items():
            if not re.match(SEARCH_PARAM_RE, name):
                raise ValueError(f"{name!r} is not an estimator argument name")
            if isinstance(values, list) and not values:
                raise ValueError(f"{name}: empty list of values; give at least one value")
        return value

    @model_validator(mode="after")
    def _method_fits_space(self) -> Search:
        drawn = sorted(name for name, values in self.space.items() if isinstance(values, Distribution))
        if self.method == "grid" and drawn:
            raise ValueError(f"space: {drawn} are distributions, which a grid cannot enumerate; "
                             "give lists of values or set training.search.method: random")
        if self.method == "halving" and self.max_seconds is not None:
            raise ValueError("max_seconds: a halving search is bounded by its rounds, not by time "
                             "(scikit-learn's halving classes cannot stop between candidates); remove max_seconds "
                             "or use method: random")
        return self


class Training(_Strict):
    estimator: str = Field(description="import path of a scikit-learn compatible estimator for the spec's task")
    params: dict[str, Any] = Field(default_factory=dict)
    search: Search | None = Field(default=None, description="hyperparameter search before the final fit")
    preprocessing: Preprocessing = Preprocessing()
    split: Split = Split()
    seed: int = 7
    schedule: str | None = Field(default=None, description="cron or preset, in addition to asset triggers")
    retrain_on_features: bool = True
    lookback_days: int = Field(
        default=30, ge=1, description="label rows used for training, counted back from the newest"
    )
    compute: Compute = Compute()
    queue: str = Field(
        default="default", pattern=QUEUE_RE,
        description="Celery queue of the heavy tasks (build_training_set, train); light tasks stay on default",
    )

    @field_validator("estimator")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if not IMPORT_PATH_RE.match(value):
            raise ValueError(
                f"must be a dotted import path like sklearn.ensemble.HistGradientBoostingClassifier, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _searched_or_fixed(self) -> Training:
        both = sorted(set(self.params) & set(self.search.space)) if self.search else []
        if both:
            raise ValueError(f"{both} are both fixed in training.params and searched in "
                             "training.search.space; remove them from one of the two")
        return self


class Threshold(_Strict):
    min: float | None = None
    max: float | None = None


class Slice(_Strict):
    """Per-slice metrics: one group per value, or per bin when `bins` (edges, ascending) is given."""

    column: str
    bins: tuple[float, ...] | None = Field(default=None, min_length=2)

    @field_validator("bins")
    @classmethod
    def _ascending(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and list(value) != sorted(set(value)):
            raise ValueError(f"bin edges must be strictly ascending, got {list(value)}")
        return value


class Fairness(_Strict):
    """Fairness across groups of the held-out rows (core/fairness.py): a challenger breach blocks promotion."""

    groups: tuple[str, ...] = Field(min_length=1, description="columns of the held-out rows that define groups")
    metrics: tuple[str, ...] = Field(
        default=("demographic_parity_difference", "equal_opportunity_difference"), min_length=1,
        description="fairlearn metric names or <task metric>_difference (core/fairness.py)")
    max: float = Field(default=0.1, gt=0.0, description="largest allowed *_difference between two groups")
    min_ratio: float = Field(default=0.8, gt=0.0, le=1.0, description="smallest allowed *_ratio (1 = equal)")
    min_group_rows: int = Field(default=30, ge=1, description="smaller groups are listed, not compared")


class Explanations(_Strict):
    """How the training job explains each version (core/explanations.py): global importance on held-out rows."""

    method: Literal["permutation", "shap"] = Field(
        default="permutation",
        description="permutation: scikit-learn's permutation importance with the primary metric's scorer; shap: "
                    "mean |SHAP value| (needs `pip install shap` where training runs; checked before training)")
    max_rows: int = Field(default=2000, ge=50, le=1_000_000, description="held-out rows used at most (seeded sample)")
    repeats: int = Field(default=3, ge=1, le=50, description="permutations per feature (permutation only)")


class Evaluation(_Strict):
    """How a challenger is judged: absolute thresholds, then against the champion on the same rows.

    Metric defaults depend on the task (core/tasks.py DEFAULT_PRIMARY/DEFAULT_METRICS); the ModelSpec fills them
    in, so the defaults written here are binary's (an Evaluation built alone, as before tasks existed).

    rule "improvement": promote when the primary metric's gain over the champion is at least
    `min_improvement` AND the lower bound of its bootstrap confidence interval is above 0.
    rule "non_regression": promote unless the CI's lower bound shows a loss above `max_regression`.
    Gains are signed so that positive is better (rmse falling is a gain).
    """

    primary_metric: Literal[ALL_METRICS] = "roc_auc"  # type: ignore[valid-type]
    metrics: tuple[Literal[ALL_METRICS], ...] = ("roc_auc", "accuracy", "f1", "log_loss")  # type: ignore[valid-type]
    thresholds: dict[Literal[ALL_METRICS], Threshold] = Field(default_factory=dict)  # type: ignore[valid-type]
    rule: Literal["improvement", "non_regression"] = "improvement"
    min_improvement: float = Field(default=0.0, ge=0.0)
    max_regression: float = Field(default=0.0, ge=0.0)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    bootstrap_samples: int = Field(default=500, ge=50, le=20000)
    slices: tuple[Slice, ...] = ()
    min_slice_rows: int = Field(default=50, ge=1, description="smaller slices are reported but flagged")
    fairness: Fairness | None = Field(default=None, description="group fairness metrics that can block promotion")
    explanations: Explanations | None = Field(
        default=None, description="how each version's global importance is computed (absent: permutation, "
                                  "2000 rows, 3 repeats)")


class Canary(_Strict):
    """A new champion first gets `traffic` of the requests (sticky by entity key) for `window`."""

    traffic: float = Field(default=0.1, gt=0.0, le=1.0)
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_p99_ms: float = Field(default=250.0, gt=0.0, description="p99 latency limit of canary requests")
    window: str = Field(default="10m", pattern=DURATION)
    min_requests: int = Field(default=50, ge=1, description="fewer canary requests = no verdict yet")


class Experiment(_Strict):
    """An online experiment decides the promotion instead of moving `champion` at once (README "Experiments").

    `ab`: `traffic` of the entity keys (sticky) go to the new version, the rest to the champion; a scheduled
    readout joins delayed labels per arm and promotes, rolls back or extends with an always-valid interval
    of the difference in `metric` (core/experiment_stats.py). `bandit`: routing shares over the champion,
    the new version and earlier versions (`arms`) follow the labelled outcomes (`policy`), never below
    `min_share`; at `max_duration` the arm most likely best (probability >= 1 - alpha) becomes champion.
    """

    type: Literal["ab", "bandit"] = "ab"
    traffic: float = Field(default=0.5, gt=0.0, lt=1.0, description="ab: share of entity keys for the new version")
    metric: Literal[ALL_METRICS] | None = Field(  # type: ignore[valid-type]
        default=None, description="default: evaluation.primary_metric (bandit: a per-row metric, core/experiments.py)")
    min_labels: int = Field(default=200, ge=2, description="labelled predictions per arm before any decision")
    max_duration: str = Field(default="7d", pattern=DURATION, description="undecided by then: the champion stays")
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5, description="error rate over all looks together")
    rule: Literal["improvement", "non_regression"] = "improvement"
    max_regression: float = Field(default=0.0, ge=0.0, description="non_regression: tolerated loss in metric units")
    policy: Literal["thompson", "ucb"] = "thompson"
    min_share: float = Field(default=0.05, ge=0.0, lt=0.5, description="bandit: traffic floor of every arm")
    arms: int | tuple[int, ...] = Field(
        default=2, description="bandit: N (champion, new version and the N-2 latest other eligible versions) or a "
                               "list of versions added to the champion and the new version")
    update_schedule: str = Field(default="@hourly", description="cron or preset of the <model>__experiment readout")

    @field_validator("arms")
    @classmethod
    def _arms(cls, value: int | tuple[int, ...]) -> int | tuple[int, ...]:
        if isinstance(value, int) and not 2 <= value <= 10:
            raise ValueError("a bandit has 2 to 10 arms")
        if isinstance(value, tuple) and (not value or len(set(value)) != len(value) or min(value) < 1):
            raise ValueError("list distinct registered version numbers (1, 2, ...)")
        return value

    @model_validator(mode="after")
    def _fields_of_the_type(self) -> Experiment:
        other = {"ab": {"policy", "min_share", "arms"}, "bandit": {"traffic", "rule", "max_regression"}}[self.type]
        wrong = sorted(other & self.model_fields_set)
        if wrong:
            raise ValueError(f"{wrong} do not apply to type {self.type!r}; remove them or set type: "
                             f"{'bandit' if self.type == 'ab' else 'ab'}")
        return self


class Promotion(_Strict):
    approval: Literal["auto", "manual"] = "auto"
    approval_timeout: str = Field(
        default="7d", pattern=DURATION, description="a manual approval not answered by then fails"
    )
    canary: Canary | None = None
    experiment: Experiment | None = Field(default=None, description="an A/B test or bandit decides the promotion")
    shadow: bool = Field(default=False, description="serving also scores the challenger, off the request path")


class KubernetesServing(_Strict):
    image: str = "airflow-mlops-serving:latest"
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    replicas: int = Field(default=2, ge=1)
    cpu: str = Field(default="500m", pattern=r"^\d+(\.\d+)?m?$")
    memory: str = Field(default="1Gi", pattern=r"^\d+(Ki|Mi|Gi|Ti|K|M|G|T)?$")
    rollout_timeout_seconds: int = Field(default=600, ge=30)
    state_volume_claim: str | None = Field(
        default=None, pattern=K8S_NAME,
        description="PVC holding MLOPS_HOME: its feast/ folder (Feast registry) is mounted read-only in the pods")
    registry_configmap: str | None = Field(
        default=None, pattern=K8S_NAME, description="instead of the PVC: a ConfigMap with key registry.db")
    online_store: str | None = Field(
        default=None, description="pods' MLOPS_FEAST_ONLINE_STORE, redis://host:port/db (no password)")
    prediction_log_url: str | None = Field(
        default=None, description="pods' MLOPS_PREDICTION_LOG_URL, postgresql://user@host/db (no password)")


class Serving(_Strict):
    """Where the online prediction server runs and how the training DAG deploys to it."""

    target: Literal["none", "local", "kubernetes"] = Field(
        default="none", description="none: servers follow the champion alias by themselves"
    )
    url: str = Field(default="http://127.0.0.1:8000", description="base URL of the serving app (target local)")
    poll_seconds: float = Field(default=5.0, gt=0.0, description="how often servers re-read the champion alias")
    feature_fallback: Literal["fail", "request"] = Field(
        default="fail", description="online store down: 503 (fail) or predict from request-time features only"
    )
    stale_features: Literal["fail", "request", "serve_stale"] = Field(
        default="serve_stale", description="an online row older than its view's TTL (or max_feature_age): 503 "
                                           "(fail), score from request-time features only (request), or score it "
                                           "and say so (serve_stale); the last two answer degraded: true")
    max_feature_age: str | None = Field(
        default=None, pattern=DURATION, description="stricter than the views' TTL, e.g. 6h (none: the TTL)")
    validate_ranges: bool = Field(
        default=False, description="refuse numbers outside the model's training-set feature ranges (422)")
    allow_empty_rows: bool = Field(
        default=False, description="score a row whose feature columns are all missing (null) on imputed values "
                                   "alone; default: refuse it (422)")
    kubernetes: KubernetesServing = KubernetesServing()
    smoke_request: dict[str, Any] | None = Field(
        default=None, description="a /predict body sent after each full deploy, e.g. {driver_id: 1001, ...}; "
                                  "default: the version's MLflow input example through /v2 infer"
    )


class BatchInference(_Strict):
    schedule: str | None = Field(default="@daily", description="cron or preset; also runs on a new champion")
    entity_dataset: str | None = Field(default=None, pattern=NAME_RE, description="default: features.entity_df")
    lookback_days: int = Field(default=1, ge=1, description="entity rows scored, counted back from the newest")
    chunk_rows: int = Field(default=100_000, ge=1000, description="rows per chunk: bounds memory")
    canary: Canary | None = None


DriftMethod = Literal["psi", "ks", "wasserstein", "jensenshannon"]
class ColumnDrift(_Strict):
    """A per-column override of the drift method and/or threshold."""

    method: DriftMethod | None = None
    threshold: float | None = Field(default=None, gt=0.0)


class Drift(_Strict):
    """Data drift of the model's input columns: current window vs the champion's training snapshot.

    `threshold` is a p-value for ks (drift when p < threshold) and a distance for psi, wasserstein
    and jensenshannon (drift when distance >= threshold). The model drifted when the share of
    drifted columns is >= `drift_share`.
    """

    method: DriftMethod = "psi"
    threshold: float = Field(default=0.2, gt=0.0)
    drift_share: float = Field(default=0.3, gt=0.0, le=1.0)
    columns: dict[str, ColumnDrift] = Field(default_factory=dict, description="per-column method/threshold")
    sample_rows: int = Field(default=200_000, ge=1000, description="rows per side beyond which both are sampled")


class Labels(_Strict):
    """Where delayed labels arrive: parquet/CSV files dropped in <MLOPS_HOME>/labels/<model>/ (or `path`)."""

    path: str | None = Field(default=None, description="directory of label files; default <MLOPS_HOME>/labels/<model>")
    label_column: str | None = Field(default=None, description="default: features.label")
    join: Literal["request_id", "entity_time"] = Field(
        default="request_id", description="request_id, or entity keys + event time within `join_tolerance`"
    )
    timestamp_column: str = "event_timestamp"
    join_tolerance: str = Field(default="1h", pattern=DURATION)


class Performance(_Strict):
    """Delayed-label performance vs the champion's evaluation metric."""

    metric: str | None = Field(default=None, description="default: evaluation.primary_metric")
    tolerance: float = Field(default=0.05, ge=0.0, description="degraded when metric drops more than this")
    min_labels: int = Field(default=100, ge=1, description="fewer joined labels = no verdict")
    labels: Labels = Labels()


class Skew(_Strict):
    """Training-serving skew: online feature values logged at serving vs offline values, same entity/time."""

    tolerance: float = Field(default=1e-6, ge=0.0, description="relative difference counted as a mismatch")
    max_mismatch_share: float = Field(default=0.01, ge=0.0, le=1.0)
    sample_rows: int = Field(default=5000, ge=10)


class Monitoring(_Strict):
    schedule: str | None = "@hourly"
    window: str = Field(default="24h", pattern=DURATION, description="current data = the last `window` of predictions")
    min_rows: int = Field(default=100, ge=1, description="a smaller window emits nothing and says so")
    drift: Drift = Drift()
    performance: Performance = Performance()
    skew: Skew = Skew()
    cooldown: str = Field(default="6h", pattern=DURATION, description="events within this after a retrain start none")
    retrain_on: tuple[Literal["drift", "performance"], ...] = Field(
        default=("drift", "performance"),
        description="monitoring events that retrain; features: see training.retrain_on_features",
    )


class ModelSpec(_Strict):
    name: str = Field(pattern=NAME_RE, description="MLflow registered model name and DAG id prefix")
    description: str = ""
    owner: str = "mlops"
    tags: tuple[str, ...] = ()
    intended_use: str = ""
    limitations: str = ""
    features: Features
    validation: Validation = Validation()
    training: Training
    evaluation: Evaluation = Evaluation()
    promotion: Promotion = Promotion()
    serving: Serving = Serving()
    batch: BatchInference = BatchInference()
    monitoring: Monitoring = Monitoring()
    task: TaskType = Field(default="binary", description="binary | multiclass | regression; default: decided "
                                                            "from the label contract or the metrics (core/tasks.py)")
    source_file: str = Field(default="", exclude=True, description="set by the loader, not by users")
    task_source: str = Field(default="spec: task", exclude=True, description="how `task` was decided; set by the "
                                                                              "spec model, not by users")

    @model_validator(mode="before")
    @classmethod
    def _decide_task(cls, data: Any) -> Any:
        """Fill `task` (and the task's metric defaults) when the spec leaves them out: core/tasks.py decide_task."""
        if not isinstance(data, dict) or "task_source" in data:
            return data
        evaluation = data.get("evaluation") if isinstance(data.get("evaluation"), dict) else {}
        named = [evaluation.get("primary_metric"), *(evaluation.get("metrics") or []),
                 *(evaluation.get("thresholds") or {})] if isinstance(evaluation, dict) else []
        decision = decide_task(data.get("task"), [str(m) for m in named if m], _suite_path(data))
        if decision.task not in METRICS_BY_TASK:
            return data  # an unknown task is reported by the field's own validation
        filled = dict(evaluation or {})
        filled.setdefault("primary_metric", DEFAULT_PRIMARY[decision.task])
        filled.setdefault("metrics", list(DEFAULT_METRICS[decision.task]))
        return {**data, "task": decision.task, "task_source": decision.source,
                **({"evaluation": filled} if isinstance(data.get("evaluation", {}), dict) else {})}

    @model_validator(mode="after")
    def _metrics_fit_the_task(self) -> ModelSpec:
        allowed = METRICS_BY_TASK[self.task]
        ev = self.evaluation
        named = {"evaluation.primary_metric": [ev.primary_metric], "evaluation.metrics": list(ev.metrics),
                 "evaluation.thresholds": list(ev.thresholds),
                 "monitoring.performance.metric": [m for m in [self.monitoring.performance.metric] if m]}
        if self.training.search is not None and self.training.search.metric:
            named["training.search.metric"] = [self.training.search.metric]
        wrong = {where: [m for m in names if m not in allowed] for where, names in named.items()}
        problems = [f"{where}: {bad} are not {self.task} metrics" for where, bad in wrong.items() if bad]
        if problems:
            raise ValueError("; ".join(problems) + f" (task {self.task}, {self.task_source}); allowed: "
                             f"{list(allowed)}. Name metrics of the task, or set `task` if it was decided wrongly")
        return self

    @model_validator(mode="after")
    def _fairness_metrics_fit_the_task(self) -> ModelSpec:
        fairness = self.evaluation.fairness
        if fairness is None:
            return self
        from airflow_mlops.core.fairness import fairness_metric_names

        allowed = fairness_metric_names(self.task)
        unknown = [m for m in fairness.metrics if m not in allowed]
        if unknown:
            raise ValueError(f"evaluation.fairness.metrics: {unknown} are not fairness metrics of a {self.task} model "
                             f"({self.task_source}); allowed: {list(allowed)}")
        return self

    @model_validator(mode="after")
    def _canary_needs_the_serving_app(self) -> ModelSpec:
        # The canary's traffic split happens inside the serving app (sticky by entity key); a Kubernetes
        # Deployment would need a split across Deployments, which the deploy task does not drive.
        if self.promotion.canary is not None and self.serving.target != "local":
            raise ValueError(f"promotion.canary needs serving.target 'local' (got {self.serving.target!r}): the "
                             "canary split runs in the serving app the deploy task talks to; remove promotion.canary "
                             "or set serving.target: local")
        return self

    @model_validator(mode="after")
    def _experiment_fits(self) -> ModelSpec:
        experiment = self.promotion.experiment
        if experiment is None:
            return self
        from airflow_mlops.core.experiments import experiment_problems

        problems = experiment_problems(experiment, self.task, self.evaluation.primary_metric,
                                       canary=self.promotion.canary is not None, target=self.serving.target)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def search_config(self) -> dict[str, Any] | None:
        """training.search with its defaults resolved (cv from the split, metric from the evaluation), as JSON."""
        search = self.training.search
        if search is None:
            return None
        config = search.model_dump(mode="json")
        config["cv"] = search.cv or self.training.split.method.replace("random", "kfold")
        config["metric"] = search.metric or self.evaluation.primary_metric
        return config

    def explanations_config(self) -> dict[str, Any] | None:
        """evaluation.explanations as JSON for the training job; None when the spec leaves the defaults."""
        explanations = self.evaluation.explanations
        return explanations.model_dump(mode="json") if explanations else None

    @property
    def training_columns(self) -> tuple[str, ...]:
        return self.features.entity_df.request_features

    @property
    def excluded_columns(self) -> list[str]:
        """Training-set columns that are never model inputs besides label and timestamp: the entity keys and the
        evaluation-only attributes (`features.entity_df.attributes`)."""
        return [*self.features.entity_keys, *self.features.entity_df.attributes]


def spec_sha256(spec: ModelSpec) -> str:
    """sha256 of the spec's parsed content: canonical JSON of every field, defaults filled in.

    Hashing the parsed spec rather than the YAML bytes: comments, key order, quoting, indentation and flow vs
    block style do not change what the spec means, so they do not change the hash; a changed default does
    (that comes with a new code commit anyway). `source_file` (where the spec lives) is not content, and
    neither is `training.queue` (which workers run the tasks): moving training to another queue is not a new model.
    An absent `training.search` (and `evaluation.fairness`, `evaluation.explanations`, `promotion.experiment`, an empty
    `features.entity_df.attributes`) is left out, so specs written before it existed keep their hash.
    """
    import hashlib

    from airflow_mlops.core.lineage import canonical_json

    content = spec.model_dump(mode="json", exclude={"training": {"queue"}})
    if content.get("task") == "binary":  # the only task before the field existed: older specs keep their hash
        content.pop("task")
    if content["training"].get("search") is None:  # a spec without a search hashes as before the field existed
        content["training"].pop("search", None)
    if content["evaluation"].get("fairness") is None:  # likewise for fairness
        content["evaluation"].pop("fairness", None)
    if content["evaluation"].get("explanations") is None:  # and for how versions are explained
        content["evaluation"].pop("explanations", None)
    if content["promotion"].get("experiment") is None:  # likewise for online experiments
        content["promotion"].pop("experiment", None)
    if not content["features"]["entity_df"].get("attributes"):  # and for evaluation-only label-table columns
        content["features"]["entity_df"].pop("attributes", None)
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


def _suite_path(data: dict[str, Any]) -> Path | None:
    """The validation suite file that may state the label contract (include/expectations/<suite>.json)."""
    validation = data.get("validation")
    suite = validation.get("suite") if isinstance(validation, dict) else None
    if not isinstance(suite, str) or not suite:
        return None
    from airflow_mlops.config import expectations_dir

    return expectations_dir() / f"{suite}.json"


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """'90s', '15m', '6h', '7d' -> seconds (the spec's duration fields are validated to this shape)."""
    return int(text[:-1]) * _UNIT_SECONDS[text[-1]]


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<root>"


def _describe(error: dict[str, Any]) -> str:
    """'field.path: got X; rule. allowed: ...' — one line per pydantic error."""
    where = _field_path(error["loc"])
    got = error.get("input")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field (value {got!r}); remove it or check its spelling"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    if error["type"] == "value_error" and (not error["loc"] or isinstance(got, dict)):
        # a rule across fields (a model validator) names its fields itself, relative to where it sits
        return (f"{where}: " if error["loc"] else "") + str(error["msg"]).removeprefix("Value error, ")
    allowed = error.get("ctx", {}).get("expected")
    hint = f"; allowed: {allowed}" if allowed and str(allowed) not in error["msg"] else ""
    shown = got if not isinstance(got, dict) else "{...}"
    return f"{where}: got {shown!r}; {error['msg']}{hint}"


def parse_spec(text: str, source: str) -> ModelSpec:
    """Parse one spec; raises SpecError naming the file and every bad field."""
    problems = spec_problems(text, source)
    if problems:
        raise SpecError(problems)
    data = yaml.safe_load(text)
    return ModelSpec.model_validate({**data, "source_file": source})


def spec_problems(text: str, source: str) -> list[str]:
    """Every problem in one spec file, as 'file: field: message' lines (empty when valid)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [f"{source}: not valid YAML ({exc})".replace("\n", " ")]
    if not isinstance(data, dict):
        return [f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}"]
    for reserved in ("source_file", "task_source"):
        if reserved in data:
            return [f"{source}: {reserved}: reserved field, set by the loader; remove it"]
    try:
        ModelSpec.model_validate(data)
    except ValidationError as exc:
        return [f"{source}: {_describe(dict(err))}" for err in exc.errors()]
    stem = Path(source).stem
    if data.get("name") != stem:
        return [f"{source}: name: got {data.get('name')!r}; must equal the file name {stem!r} so one file = one model"]
    return []


def load_specs(directory: Path | str | None = None) -> list[ModelSpec]:
    """All specs of a directory, sorted by name; raises one SpecError listing every problem of every file."""
    from airflow_mlops.config import models_dir

    folder = Path(directory) if directory is not None else models_dir()
    if not folder.is_dir():
        raise SpecError([f"{folder}: model spec directory does not exist; set MLOPS_MODELS_DIR or create it"])
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    problems: list[str] = []
    specs: list[ModelSpec] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        found = spec_problems(text, str(path))
        problems.extend(found)
        if not found:
            specs.append(parse_spec(text, str(path)))
    if problems:
        raise SpecError(problems)
    return sorted(specs, key=lambda s: s.name)
