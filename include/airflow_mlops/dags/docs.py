"""doc_md for generated DAGs: what the DAG does, which spec made it, which assets it listens to."""

from __future__ import annotations

from airflow_mlops.core.spec import ModelSpec


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
    approval = ("**approve** — a human approves in *Required actions* (or the REST API) within "
                f"{spec.promotion.approval_timeout}; reject keeps the champion.\n7. " if manual else "")
    return f"""### Training: `{spec.name}`
{spec.description}

Generated from `{spec.source_file}` — edit the spec, not this DAG.

1. **build_training_set** — point-in-time join of `{feats.entity_df.dataset}` (label `{feats.label}`)
   with feature service `{feats.feature_service}` (last {train.lookback_days} days), validated by its suite.
2. **train** — `{train.estimator}` {where}, seed {train.seed}, {train.split.method} split
   ({train.split.test_size:.0%} held out); logged to MLflow experiment `{spec.name}`.
3. **evaluate** — challenger and current champion on the same held-out rows: thresholds ({thresholds}),
   then rule `{ev.rule}` on `{ev.primary_metric}` with a {ev.confidence:.0%} bootstrap CI. Below a
   threshold the run fails here (nothing registered).
4. **register** — version of `{spec.name}` with alias `challenger` and verdict tags (idempotent).
5. **model_card** — card (Markdown/HTML/JSON) logged to the run, linked from the version.
6. {approval}**promote** — moves `champion` when the verdict says so (skipped otherwise, reason logged);
   audit trail in the registry; emits `mlops.model.{spec.name}.champion`.

**Runs on**: feature assets {listens}; schedule `{train.schedule or "none"}`; or by hand.
Undo a promotion with the `{spec.name}__rollback` DAG.

- Intended use: {spec.intended_use or "—"}
- Limitations: {spec.limitations or "—"}
"""


def rollback_dag_doc(spec: ModelSpec) -> str:
    return f"""### Rollback: `{spec.name}`
Manual only. Trigger with config `{{"target": "previous", "reason": "..."}}` or a version number as target.

The target must exist and must have been champion before (audit trail or `airflow_mlops.was_champion`
tag). Under the registry lease the `champion` alias moves in one call, the move is written to the
audit trail, and `mlops.model.{spec.name}.champion` is emitted (so deployment follows).
"""
