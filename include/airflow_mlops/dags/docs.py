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

**Emits** (one event per materialized view):
{emitted}

Used by: {used_by}.
"""


def training_dag_doc(spec: ModelSpec) -> str:
    feats, train = spec.features, spec.training
    listens = ", ".join(f"`mlops.features.{v}`" for v in feats.feature_views) if train.retrain_on_features else "none"
    return f"""### Training: `{spec.name}`
{spec.description}

Generated from `{spec.source_file}` — edit the spec, not this DAG.

1. **build_training_set** — point-in-time join of `{feats.entity_df.dataset}` (label `{feats.label}`)
   with feature service `{feats.feature_service}` (last {train.lookback_days} days).
2. **train** — `{train.estimator}` with seed {train.seed}, {train.split.method} split
   ({train.split.test_size:.0%} validation); logged to MLflow experiment `{spec.name}`.
3. **register** — registers a version of `{spec.name}` and points alias `challenger` at it
   (idempotent on retries).

**Runs on**: feature assets {listens}; schedule `{train.schedule or "none"}`; or by hand.

- Intended use: {spec.intended_use or "—"}
- Limitations: {spec.limitations or "—"}
"""
