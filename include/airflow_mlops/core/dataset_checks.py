"""`airflow-mlops check`, data side: specs against the landed data and the expectation suites.

Three rules, each reported as 'file: field: what is wrong; the rule; the fix' like the other checks:

- *columns*: a spec's label, entity keys, event-time column and request features must be columns
  of its label dataset (`features.entity_df.dataset`). The columns come from the landed offline
  parquet (MLOPS_HOME/offline/<dataset>/) when there is any, else from the dataset's suite
  (`<expectations>/<dataset>.json`, its `expect_table_columns_to_match_set` column set).
- *suite labels*: a suite's contract `meta.airflow_mlops.label_column` is the one column the
  `no_label_leakage` rule lets through. On a model's label table (a spec's entity_df dataset) or
  its training-set suite (`validation.suite`) it must be that model's label; on a feature table (a
  dataset a Feast feature view reads) it must not be any model's label (it would let that label in).
- *lookback*: `training.lookback_days` counts back from the newest landed label row; the rows it
  keeps are split by `training.split`, and the held-out part is what evaluation scores. It must hold
  at least `evaluation.min_slice_rows` rows (the fewest evaluation reports without flagging them
  as noisy) and both label classes, and so must the training part (classification tasks). Checked only
  on landed data.
- *label vs task*: the landed label values must fit the spec's task (`core.training.check_label`: 0/1 for
  binary, 3+ classes of one kind for multiclass, finite numbers for regression); the error names the
  column, the task, how the task was decided and the fix.

pyarrow/pandas are imported inside functions (the CLI runs this, never a DAG file).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops import config

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.core.spec import ModelSpec

CONTRACT_KEY = "airflow_mlops"  # core.suites.CONTRACT_KEY, without importing the validation stack
COLUMN_SET = "expect_table_columns_to_match_set"


@dataclass(frozen=True)
class DatasetColumns:
    """A dataset's columns and where they were read."""

    columns: frozenset[str]
    source: str  # "landed data in <dir>" | "suite <file>"


def _dataset_dir(dataset: str, home: Path | None) -> Path:
    return home / "offline" / dataset if home is not None else config.paths().dataset_dir(dataset)


def _landed(dataset_dir: Path) -> bool:
    return any(dataset_dir.glob("**/*.parquet"))  # as core.training_set.load_entity_df decides


def _landed_dataset(dataset_dir: Path) -> Any:
    import pyarrow.dataset as ds

    # as core.training_set.load_entity_df reads it: hive partitions, `_batches`/`.tmp` skipped by prefix
    return ds.dataset(str(dataset_dir), format="parquet", partitioning="hive")


def _suite_columns(path: Path) -> list[str] | None:
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    for expectation in (suite.get("expectations") or []) if isinstance(suite, dict) else []:
        if isinstance(expectation, dict) and expectation.get("type") == COLUMN_SET:
            columns = (expectation.get("kwargs") or {}).get("column_set")
            return [str(c) for c in columns] if isinstance(columns, list) else None
    return None


def dataset_columns(dataset: str, home: Path | None = None, expectations: Path | None = None) -> DatasetColumns | None:
    """The landed dataset's columns, else its suite's column set; None when neither exists."""
    dataset_dir = _dataset_dir(dataset, home)
    if _landed(dataset_dir):
        names = set(_landed_dataset(dataset_dir).schema.names) - {"date"}  # `date` is the hive partition
        return DatasetColumns(frozenset(names), f"landed data in {dataset_dir}")
    suite = (expectations or config.expectations_dir()) / f"{dataset}.json"
    columns = _suite_columns(suite) if suite.is_file() else None
    return DatasetColumns(frozenset(columns), f"suite {suite} ({COLUMN_SET})") if columns is not None else None


def column_problems(spec: ModelSpec, home: Path | None = None, expectations: Path | None = None) -> list[str]:
    """Spec columns that the label dataset does not have, one line per field."""
    entity = spec.features.entity_df
    try:
        found = dataset_columns(entity.dataset, home, expectations)
    except (OSError, ValueError) as exc:  # pyarrow: ArrowIOError / ArrowInvalid
        return [f"{spec.source_file}: features.entity_df.dataset: the landed data of {entity.dataset!r} in "
                f"{_dataset_dir(entity.dataset, home)} cannot be read ({exc}); replace the broken file(s)"]
    if found is None:
        return []
    wanted: list[tuple[str, Sequence[str]]] = [
        ("features.label", [spec.features.label]),
        ("features.entity_keys", list(spec.features.entity_keys)),
        ("features.entity_df.timestamp_column", [entity.timestamp_column]),
        ("features.entity_df.request_features", list(entity.request_features)),
        ("features.entity_df.attributes", list(entity.attributes)),
    ]
    problems = []
    for field, columns in wanted:
        missing = [c for c in columns if c not in found.columns]
        if missing:
            problems.append(
                f"{spec.source_file}: {field}: {_listed(missing)} not in dataset {entity.dataset!r} "
                f"(columns per {found.source}: {sorted(found.columns)}); the training set and the batch scores read "
                f"these columns from features.entity_df.dataset — fix the name(s) or land data that has them"
            )
    return problems


def _listed(names: Sequence[str]) -> str:
    return f"{names[0]!r} is" if len(names) == 1 else f"{list(names)} are"


def _is_feature_table(dataset: str, sources: Iterable[str], home: Path | None) -> bool:
    folder = str(_dataset_dir(dataset, home))
    return any(src == folder or src.startswith(folder + "/") or f"offline/{dataset}/" in src for src in sources)


def suite_label_problems(specs: Iterable[ModelSpec], expectations: Path | None = None,
                         feature_sources: Sequence[str] | None = None, home: Path | None = None) -> list[str]:
    """Suites whose contract label is not the label of the model(s) that dataset belongs to.

    `feature_sources`: the feature views' batch source paths (None: unknown, feature tables not checked).
    """
    specs = list(specs)
    folder = expectations or config.expectations_dir()
    labels_of: dict[str, set[str]] = {}  # dataset or training-set suite -> labels of the models using it
    users: dict[str, set[str]] = {}
    models_by_label: dict[str, list[str]] = {}
    for spec in specs:
        models_by_label.setdefault(spec.features.label, []).append(spec.name)
        for key in (f"dataset:{spec.features.entity_df.dataset}", f"suite:{spec.validation.suite}"):
            labels_of.setdefault(key, set()).add(spec.features.label)
            users.setdefault(key, set()).add(spec.name)
    problems = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            suite = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: not valid JSON ({exc}); fix it or regenerate it with `airflow-mlops suite`")
            continue
        contract = (suite.get("meta") or {}).get(CONTRACT_KEY) if isinstance(suite, dict) else None
        if not isinstance(contract, dict) or not contract.get("label_column"):
            continue
        label = str(contract["label_column"])
        dataset = str(contract.get("dataset") or path.stem)
        keys = [f"dataset:{dataset}", f"suite:{path.stem}"]
        expected = set().union(*(labels_of.get(k, set()) for k in keys))
        models = sorted(set().union(*(users.get(k, set()) for k in keys)))
        where = f"{path}: meta.{CONTRACT_KEY}.label_column"
        if expected and label not in expected:
            problems.append(
                f"{where}: {label!r} is not the label of the model(s) trained on dataset {dataset!r} ({models}: "
                f"features.label {sorted(expected)}); rule no_label_leakage lets the contract's own label through and "
                f"rejects every other label-like column, so this suite would reject {sorted(expected)} and pass "
                f"{label!r} — set it to {sorted(expected)[0]!r}"
            )
        elif not expected and label in models_by_label and feature_sources is not None and \
                _is_feature_table(dataset, feature_sources, home):
            owners = models_by_label[label]
            problems.append(
                f"{where}: {label!r} is the label of model(s) {owners}, but dataset {dataset!r} is a feature table (a "
                f"Feast feature view reads it), not their label table (features.entity_df.dataset); rule "
                f"no_label_leakage lets the contract's own label through, so this feature table could carry the label "
                f"unnoticed — set label_column to null and list {label!r} in forbidden_columns"
            )
    return problems


@dataclass(frozen=True)
class LookbackRows:
    """What `training.lookback_days` keeps of the landed label data, and how the split divides it."""

    total: int
    kept: int
    train: int
    held_out: int
    train_classes: tuple[Any, ...]
    held_out_classes: tuple[Any, ...]
    first: Any
    newest: Any


def lookback_rows(frame: pd.DataFrame, timestamp: str, label: str, lookback_days: int, method: str,
                  test_size: float, seed: int = 7) -> LookbackRows:
    """The rows training gets: `load_entity_df`'s window (newest - lookback_days, newest] (the newest
    row of any, as there), the labelled ones, divided by `core.training.split` as `train` does."""
    from datetime import timedelta

    from airflow_mlops.core.training import split

    if frame.empty:
        return LookbackRows(0, 0, 0, 0, (), (), None, None)
    newest = frame[timestamp].max()
    window = frame[frame[timestamp] > newest - timedelta(days=int(lookback_days))]
    kept = window[window[label].notna()].sort_values(timestamp, kind="mergesort").reset_index(drop=True)
    total = int(frame[label].notna().sum())
    if kept.empty:
        return LookbackRows(total, 0, 0, 0, (), (), None, newest)
    train_part, valid = split(kept, method, test_size, timestamp, seed)
    return LookbackRows(
        total=total, kept=len(kept), train=len(train_part), held_out=len(valid),
        train_classes=tuple(sorted(train_part[label].unique().tolist())),
        held_out_classes=tuple(sorted(valid[label].unique().tolist())),
        first=kept[timestamp].min(), newest=newest,
    )


def _landed_labels(spec: ModelSpec, home: Path | None) -> pd.DataFrame | None:
    """The landed label dataset's event time and label columns; None when absent or unreadable."""
    entity = spec.features.entity_df
    dataset_dir = _dataset_dir(entity.dataset, home)
    if not _landed(dataset_dir):
        return None
    from airflow_mlops.core.offline import normalize_timestamps

    columns = [entity.timestamp_column, spec.features.label]
    try:
        dataset = _landed_dataset(dataset_dir)
        if not set(columns) <= set(dataset.schema.names):
            return None  # column_problems reports it
        table = dataset.to_table(columns=columns)
    except (OSError, ValueError):
        return None  # column_problems reports unreadable data
    return normalize_timestamps(table.to_pandas())


def label_task_problems(spec: ModelSpec, frame: pd.DataFrame, home: Path | None = None) -> list[str]:
    """The landed label values against the spec's task (what training would refuse), named by column and task."""
    from airflow_mlops.core.training import check_label
    from airflow_mlops.exceptions import TrainingFailed

    label = spec.features.label
    try:
        check_label(frame[label].dropna(), label, spec.task)
    except TrainingFailed as exc:
        where = _dataset_dir(spec.features.entity_df.dataset, home)
        return [f"{spec.source_file}: {exc} — in the landed data of dataset {spec.features.entity_df.dataset!r} "
                f"({where}); the task is {spec.task} ({spec.task_source})"]
    return []


def lookback_problems(spec: ModelSpec, home: Path | None = None) -> list[str]:
    """The landed labels against the task, then `training.lookback_days` leaving evaluation too few held-out rows
    (or one class), on landed data only."""
    frame = _landed_labels(spec, home)
    if frame is None or frame.empty:
        return []
    wrong = label_task_problems(spec, frame, home)
    if wrong:
        return wrong
    entity, split, days = spec.features.entity_df, spec.training.split, spec.training.lookback_days
    rows = lookback_rows(frame, entity.timestamp_column, spec.features.label, days, split.method, split.test_size,
                         spec.training.seed)
    need = spec.evaluation.min_slice_rows
    where = f"{spec.source_file}: training.lookback_days"
    kept = (f"{days} day(s) keeps {rows.kept} of the {rows.total} labelled rows of dataset {entity.dataset!r} "
            f"(up to the newest row, {_day(rows.newest)})")
    span = (rows.newest - frame[entity.timestamp_column].min()).total_seconds() / 86400
    fix = f"raise training.lookback_days (the landed labels span {span:.1f} day(s))"
    if rows.held_out < need:
        return [f"{where}: {kept}; training.split ({split.method}, test_size {split.test_size}) holds out "
                f"{rows.held_out} row(s) for evaluation, fewer than evaluation.min_slice_rows ({need}), the fewest "
                f"rows evaluation scores without flagging the result as noisy — {fix}, raise training.split.test_size "
                f"or lower evaluation.min_slice_rows"]
    for part, classes in (("held-out", rows.held_out_classes), ("training", rows.train_classes)):
        if len(classes) < 2 and spec.task != "regression":
            metric = spec.evaluation.primary_metric
            return [f"{where}: {kept}; its {part} rows hold only label value(s) {list(classes)} of "
                    f"{spec.features.label!r}; training and evaluation need both classes ({metric} is undefined "
                    f"otherwise) — {fix}"]
    return []


def _day(value: Any) -> str:
    return value.isoformat(timespec="minutes") if hasattr(value, "isoformat") else str(value)


def dataset_problems(specs: Sequence[ModelSpec], home: Path | None = None, expectations: Path | None = None,
                     feature_sources: Sequence[str] | None = None) -> list[str]:
    """Every data-side problem of the specs (columns, suite labels, lookback), all at once."""
    problems: list[str] = []
    labelled = []  # specs whose label is a column of their dataset: a wrong spec label is reported once, there
    for spec in specs:
        found = column_problems(spec, home, expectations)
        problems.extend(found)
        problems.extend(lookback_problems(spec, home))
        if not any(p.startswith(f"{spec.source_file}: features.label:") for p in found):
            labelled.append(spec)
    problems.extend(suite_label_problems(labelled, expectations, feature_sources, home))
    return problems
