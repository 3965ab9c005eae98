"""doc_md for generated DAGs: what the DAG does, which spec made it, which assets it listens to."""

from __future__ import annotations

from airflow_mlops.core.spec import ModelSpec
from airflow_mlops.core.tasks import higher_is_better


def feature_dag_doc(views: list[str], specs: list[ModelSpec]) -> str:
    used_by = ", ".join(f"`{s.name}`" for s in specs) or "no model yet"
    emitted = "\n".join(f"- `mlops.features.{v}`" for v in views) or "- none (no spec uses a feature view)"
    return f"""### Feature pipeline
1. **validate_raw_batches** — every parquet/CSV file in `$MLOPS_HOME/landing/<dataset>/` is checked
   against the GX suite `include/expectations/<dataset>.json` (plus UTC, not-in-the-future and
   label-leakage rules). A bad file moves to `$MLOPS_HOME/quarantine/<dataset>/` with its report, and
   the run stops here; the good files land on the next run. "Validation report" link on the task.
2. **land_raw_batches** — lands the files into the offline store (partitioned parquet, idempotent per batch).
3. **feast_apply** — only when the definitions changed.
4. **materialize** — feature views to the online store.

**Emits** (one event per view that got new rows, through its alias `mlops.features.<view>.updates`):
{emitted}

Used by: {used_by}.
"""


def training_dag_doc(spec: ModelSpec) -> str:
    feats, train, ev = spec.features, spec.training, spec.evaluation
    listens = ", ".join(f"`mlops.features.{v}`" for v in feats.feature_views) if train.retrain_on_features else "none"
    where = "in a Kubernetes pod" if train.compute.backend == "kubernetes" else "in the worker"
    thresholds = ", ".join(f"{m} {t.model_dump(exclude_none=True)}" for m, t in ev.thresholds.items()) or "none"
    manual = spec.promotion.approval == "manual"
    retrain_on = " / ".join(f"`mlops.{kind}.{spec.name}`" for kind in spec.monitoring.retrain_on)
    approval = ("**approve** — a human approves in *Required actions* (or the REST API) within "
                f"{spec.promotion.approval_timeout}; reject keeps the champion.\n7. " if manual else "")
    return f"""### Training: `{spec.name}`
{spec.description}

Generated from `{spec.source_file}` — edit the spec, not this DAG.

0. **retrain_gate** — says why this run retrains (manual, schedule, or the triggering asset events) and
   skips the whole run when it was started by {retrain_on or "monitoring"} events alone less than
   `{spec.monitoring.cooldown}` after the last retrain start (kept in the MLflow registry). The reason
   and the events become the version tags `airflow_mlops.retrain.*` ("retrained because...").
1. **build_training_set** — point-in-time join of `{feats.entity_df.dataset}` (label `{feats.label}`)
   with feature service `{feats.feature_service}` (last {train.lookback_days} days), validated by its suite.
2. **train** — `{train.estimator}` {where}, seed {train.seed}, {train.split.method} split
   ({train.split.test_size:.0%} held out); logged to MLflow experiment `{spec.name}`.
3. **evaluate** — challenger and current champion on the same held-out rows: thresholds ({thresholds}),
   then rule `{ev.rule}` on `{ev.primary_metric}` with a {ev.confidence:.0%} bootstrap CI. Below a
   threshold the run fails here (nothing registered).
4. **register** — version of `{spec.name}` with alias `challenger` and verdict tags (idempotent). A run
   whose training fingerprint (training-set sha256, spec hash, code commit, estimator params) an existing
   version has registers nothing; the tasks after it skip with the reason (registry unchanged).
5. **model_card** — card (Markdown/HTML/JSON) logged to the run, linked from the version.
6. {approval}{_promotion_step(spec)}

**Runs on**: feature assets {listens}; monitoring assets {retrain_on or "none"};
schedule `{train.schedule or "none"}`; or by hand.
Undo a promotion with the `{spec.name}__rollback` DAG.

- Intended use: {spec.intended_use or "—"}
- Limitations: {spec.limitations or "—"}
"""


def _promotion_step(spec: ModelSpec) -> str:
    experiment = spec.promotion.experiment
    if experiment is None:
        return (f"""**promote** — moves `champion` when the verdict says so (skipped otherwise, reason logged);
   audit trail in the registry; emits `mlops.model.{spec.name}.champion`.""")
    return (f"""**start_experiment** — when the verdict says so, starts an online `{experiment.type}` experiment
   against the champion instead of promoting (the record is a registry tag the serving app routes by);
   the `{spec.name}__experiment` DAG reads it out and moves `champion` only when the evidence says so.""")


def experiment_dag_doc(spec: ModelSpec) -> str:
    experiment = spec.promotion.experiment
    assert experiment is not None
    what = (f"A/B test: {experiment.traffic:.0%} of the entity keys (sticky) on the new version, rule "
            f"`{experiment.rule}`" if experiment.type == "ab" else
            f"bandit (`{experiment.policy}`, every arm keeps at least {experiment.min_share:.0%} of the traffic)")
    return f"""### Online experiment readout: `{spec.name}`
Generated from `{spec.source_file}` (section `promotion.experiment`): {what}; at most `{experiment.max_duration}`,
alpha {experiment.alpha}, at least {experiment.min_labels} labelled predictions per arm before a decision.

**readout** — joins the delayed labels (`monitoring.performance.labels`) to the predictions the experiment
routed, computes the metric per arm and the always-valid interval of the difference (mSPRT for per-row
metrics, alpha-spending bootstrap for the others), and records the look in the registry (under the lease)
and in the MLflow experiment `{spec.name}.online_experiments`: **promote** (moves `champion`, audit entry,
emits `mlops.model.{spec.name}.champion`), **rollback** (the champion keeps all traffic, audit entry),
**extend**, or new bandit shares. Promote and rollback emit `mlops.experiment.{spec.name}` with the readout.
Skips when no experiment runs. Readout page: MLOps UI, model page, "Experiment".

**Runs on**: schedule `{experiment.update_schedule}`, or by hand.
"""


def rollback_dag_doc(spec: ModelSpec) -> str:
    return f"""### Rollback: `{spec.name}`
Manual only. Trigger with config `{{"target": "previous", "reason": "..."}}` or a version number as target.

The target must exist and must have been champion before (audit trail or `airflow_mlops.was_champion`
tag). Under the registry lease the `champion` alias moves in one call, the move is written to the
audit trail, and `mlops.model.{spec.name}.champion` is emitted (so deployment follows).
"""


def monitoring_dag_doc(spec: ModelSpec) -> str:
    mon = spec.monitoring
    runs_on = f"schedule `{mon.schedule}` or new label files" if mon.schedule else "new label files only"
    retrains = ", ".join(mon.retrain_on) or "nothing (retrain_on is empty)"
    metric = mon.performance.metric or spec.evaluation.primary_metric
    return f"""### Monitoring: `{spec.name}`
Generated from `{spec.source_file}` (section `monitoring`). Window: the last `{mon.window}` of the
prediction log (at least {mon.min_rows} rows, else a check is skipped and says so).

The four checks run independently (one failing never hides the others); each appends one record to
the monitoring history, shown as time series in the MLOps UI.

- **check_drift** — Evidently `{mon.drift.method}` per column (threshold {mon.drift.threshold}) against the
  champion's training snapshot, and the {spec.task} model's predictions against the champion's on that
  snapshot; drifted when the share of drifted columns is >= {mon.drift.drift_share} or the predictions
  drifted. Emits `mlops.drift.{spec.name}` (via alias `mlops.drift.{spec.name}.detected`) only then.
- **check_performance** — delayed labels joined to the predictions; emits `mlops.performance.{spec.name}`
  when `{metric}` is worse than the champion's evaluation by more than {mon.performance.tolerance}
  ({"higher" if higher_is_better(metric) else "lower"} is better).
- **check_skew** — online feature values logged at serving vs offline values (max mismatch share
  {mon.skew.max_mismatch_share}).
- **check_freshness** — online-store staleness of {", ".join(f"`{v}`" for v in spec.features.feature_views)}.
- **summary** — one line per check (runs whatever the checks' states).

**Runs on**: {runs_on} (`mlops.labels.{spec.name}`). Retraining follows on: {retrains}
(the `{spec.name}__train` DAG, cooldown `{mon.cooldown}`).
"""
