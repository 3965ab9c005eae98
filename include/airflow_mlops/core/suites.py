"""Expectation suites as files: the data contract in their meta, profiling a trusted batch, JSON round trip.

A suite is GX JSON (`suite.to_json_dict()`, read back with `ExpectationSuite(**d)`) in
`<expectations dir>/<name>.json` (`config.expectations_dir()`, default `include/expectations/`).
Its `meta["airflow_mlops"]` is the `Contract` the rules outside GX read (see `core.validation`).
A new suite comes from `suite_from_reference` (CLI `airflow-mlops suite`) and is then reviewed by
hand: profiled ranges are the reference's min/max, which is rarely the rule you mean.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.core.offline import atomic_write_bytes
from airflow_mlops.exceptions import DataValidationFailed, MLOpsError

if TYPE_CHECKING:
    import pandas as pd

CONTRACT_KEY = "airflow_mlops"
MODES = ("fail", "warn")
DUPLICATE_POLICIES = ("reject", "skip_existing")
CORRECTION_POLICIES = ("reject", "replace")


@dataclass(frozen=True)
class Contract:
    """What the pre-checks need to know about a dataset; stored in the suite's `meta["airflow_mlops"]`."""

    dataset: str
    timestamp_column: str
    key_columns: tuple[str, ...] = ()
    timestamp_columns: tuple[str, ...] = ()
    label_column: str | None = None
    forbidden_columns: tuple[str, ...] = ()
    max_label_correlation: float = 0.95
    future_tolerance_seconds: int = 300
    mode: str = "fail"
    # Row-level rules (core.row_keys): what identifies a row and what a repeated key means.
    row_key: tuple[str, ...] = ()  # default: key_columns + timestamp_column
    duplicates: str = "reject"  # a row whose key is already landed (or repeats in this run): reject | skip_existing
    corrections: str = "reject"  # a landed key arriving with other values: reject | replace
    # Plausibility rules (core.plausibility).
    valid_from: str | None = None  # ISO date/time: no timestamp before it
    max_backfill_days: float | None = None  # event times at most this many days before the landed history
    varying_columns: dict[str, float] = field(default_factory=dict)  # column -> share of its commonest value
    columns: tuple[str, ...] = ()  # the dataset's column set (schema matching); default: the suite's column set

    @classmethod
    def from_suite(cls, suite: Mapping[str, Any]) -> Contract:
        name = suite.get("name", "?")
        meta = (suite.get("meta") or {}).get(CONTRACT_KEY)
        if not isinstance(meta, dict):
            raise DataValidationFailed(f"suite '{name}' has no meta.{CONTRACT_KEY} contract (dataset, "
                                       f"timestamp_column, key_columns, ...); regenerate it with `airflow-mlops suite`")
        unknown = sorted(set(meta) - {f.name for f in fields(cls)})
        if unknown or meta.get("mode", "fail") not in MODES:
            raise DataValidationFailed(f"suite '{name}': meta.{CONTRACT_KEY} has unknown keys {unknown} or a mode "
                                       f"other than {MODES}: {meta}")
        for key, allowed in (("duplicates", DUPLICATE_POLICIES), ("corrections", CORRECTION_POLICIES)):
            if meta.get(key, allowed[0]) not in allowed:
                raise DataValidationFailed(f"suite '{name}': meta.{CONTRACT_KEY}.{key} is {meta[key]!r}; "
                                           f"allowed: {', '.join(allowed)}")
        try:
            values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.items()}
            contract = cls(**values)
        except TypeError as exc:  # dataset / timestamp_column missing
            raise DataValidationFailed(f"suite '{name}': meta.{CONTRACT_KEY} is incomplete: {exc}") from None
        contract.check_plausibility_fields(name)
        return contract

    def check_plausibility_fields(self, name: str) -> None:
        """Types of the plausibility fields, named in the error (a hand-edited suite is the usual source)."""
        where = f"suite '{name}': meta.{CONTRACT_KEY}"
        if self.valid_from is not None:
            from datetime import datetime

            try:
                datetime.fromisoformat(str(self.valid_from))
            except ValueError:
                raise DataValidationFailed(f"{where}.valid_from is {self.valid_from!r}, not an ISO date or date-time "
                                           f"(e.g. \"2020-01-01\")") from None
        if self.max_backfill_days is not None and (isinstance(self.max_backfill_days, bool) or not isinstance(
                self.max_backfill_days, int | float) or self.max_backfill_days < 0):
            raise DataValidationFailed(f"{where}.max_backfill_days is {self.max_backfill_days!r}; give a number of "
                                       f"days >= 0, or null to switch the rule off")
        bad = {c: s for c, s in dict(self.varying_columns).items()
               if isinstance(s, bool) or not isinstance(s, int | float) or not 0 < s < 1}
        if not isinstance(self.varying_columns, dict) or bad:
            raise DataValidationFailed(f"{where}.varying_columns must map a column to the share (0 < share < 1) of "
                                       f"its most common value in the reference; bad entries: {bad}")

    @property
    def row_key_columns(self) -> tuple[str, ...]:
        """What identifies one row: `row_key`, or the entity keys plus the event timestamp."""
        return self.row_key or (*self.key_columns, self.timestamp_column)

    def to_meta(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}



    @property
    def all_timestamp_columns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([self.timestamp_column, *self.timestamp_columns]))


# -- suites as files ---------------------------------------------------------------------------------------
def suite_path(name: str, directory: Path | str | None = None) -> Path:
    from airflow_mlops.config import expectations_dir

    return Path(directory if directory is not None else expectations_dir()) / f"{name}.json"


def load_suite(name: str, directory: Path | str | None = None) -> dict[str, Any]:
    """The suite JSON `<expectations dir>/<name>.json`; raises DataValidationFailed naming a missing file."""
    path = suite_path(name, directory)
    if not path.is_file():
        raise DataValidationFailed(
            f"no expectation suite '{name}': {path} does not exist. Profile a trusted batch with `airflow-mlops "
            f"suite --dataset {name} --from <file>` and review it, or point MLOPS_EXPECTATIONS_DIR elsewhere")
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataValidationFailed(f"expectation suite {path} is not valid JSON: {exc}") from None
    Contract.from_suite(suite)
    return dict(suite)


def save_suite(suite: Mapping[str, Any], path: Path | str) -> Path:
    """Write a suite as pretty JSON (atomic rename)."""
    path = Path(path)
    text = json.dumps(suite, indent=2, default=str) + "\n"
    atomic_write_bytes(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


# -- profiling ---------------------------------------------------------------------------------------------
def suite_from_reference(
    frame: pd.DataFrame,
    name: str,
    key_columns: Sequence[str],
    timestamp_column: str,
    label_column: str | None = None,
    *,
    unique_columns: Sequence[str] = (),
    forbidden_columns: Sequence[str] = (),
    max_categories: int = 10,
) -> Any:
    """A GX `ExpectationSuite` profiled from a trusted batch: review it before use (ranges are observed min/max).

    Exact column set, at least one row, dtypes, not-null keys/timestamps (and every column without
    nulls in the reference), unique entity+timestamp and `unique_columns`, observed numeric ranges
    (not for keys), label values; the contract goes to `meta["airflow_mlops"]`.
    """
    from airflow_mlops.core.validation import import_gx

    gx = import_gx()
    import great_expectations.expectations as gxe
    import pandas as pd

    missing = sorted({*key_columns, timestamp_column, *([label_column] if label_column else [])} - set(frame.columns))
    if missing:
        raise DataValidationFailed(f"reference batch for suite '{name}' lacks column(s) {missing}")
    stamps = tuple(c for c in frame.columns if pd.api.types.is_datetime64_any_dtype(frame[c]))
    contract = Contract(dataset=name, timestamp_column=timestamp_column, key_columns=tuple(key_columns),
                        timestamp_columns=stamps, label_column=label_column, forbidden_columns=tuple(forbidden_columns),
                        row_key=tuple(unique_columns[:1]), valid_from=_earliest_day(frame[timestamp_column]),
                        varying_columns=varying_shares(frame, {*key_columns, *stamps, *unique_columns}),
                        columns=tuple(str(c) for c in frame.columns))
    expectations = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(frame.columns), exact_match=True),
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=[*key_columns, timestamp_column]),
        *[gxe.ExpectColumnValuesToBeUnique(column=column) for column in unique_columns],
    ]
    for column in frame.columns:
        expectations += _column_expectations(frame[column], contract, {*key_columns, *unique_columns}, max_categories)
    # Built in one go: ExpectationSuite.add_expectation needs an active GX project context.
    return gx.ExpectationSuite(name=name, expectations=expectations, meta={CONTRACT_KEY: contract.to_meta()},
                               notes=f"profiled from a reference batch of {len(frame)} rows; review the ranges")


def _earliest_day(series: pd.Series) -> str | None:
    """The reference's first event day (ISO date): profiled as `valid_from`, to be reviewed by hand."""
    earliest = series.dropna().min() if len(series.dropna()) else None
    return None if earliest is None else earliest.strftime("%Y-%m-%d")


def varying_shares(frame: pd.DataFrame, skip: set[str]) -> dict[str, float]:
    """Columns that vary in the reference -> share of their most common value (nulls count as a value).

    The degenerate-batch rule reads it: a batch of n rows where such a column is constant has
    probability share**n under the reference's distribution.
    """
    shares = {}
    for column in frame.columns:
        values = frame[column]
        if column in skip or len(values) < 2 or values.nunique(dropna=False) < 2:
            continue
        shares[str(column)] = round(float(values.value_counts(dropna=False, normalize=True).iloc[0]), 6)
    return shares


def _column_expectations(series: pd.Series, contract: Contract, keys: set[str], max_categories: int) -> list[Any]:
    import great_expectations.expectations as gxe
    import pandas as pd

    column = str(series.name)
    out: list[Any] = []
    if column in keys or column in contract.all_timestamp_columns or not series.isna().any():
        out.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    if pd.api.types.is_datetime64_any_dtype(series):
        return out  # dtype and time zone: the timestamps_tz_utc rule (any unit, UTC)
    out.append(gxe.ExpectColumnTypeToBe(column=column, type_=str(series.dtype)))
    values = series.dropna()
    # A label is a value set (its classes), unless it is a measured quantity: a float with many values (a
    # regression target) gets a range, and its float type plus range state task regression (core.tasks).
    measured = pd.api.types.is_float_dtype(series) and values.nunique() > max_categories
    if (column == contract.label_column and not measured) or (not pd.api.types.is_numeric_dtype(series)
                                                              and 0 < values.nunique() <= max_categories):
        out.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=sorted(values.unique().tolist())))
    elif pd.api.types.is_numeric_dtype(series) and column not in keys and len(values):
        out.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=float(values.min()),
                                                     max_value=float(values.max())))
    return out


def write_reference_suite(dataset: str, source: Path | str, *, out: Path | str | None = None,
                          keys: Sequence[str] | None = None, label: str | None = None,
                          timestamp_column: str | None = None, unique: Sequence[str] = (), force: bool = False) -> Path:
    """Profile `source` into `<expectations dir>/<dataset>.json` (the `airflow-mlops suite` command).

    Keys, label and timestamp column default to the specs that use `dataset` as their label table; a
    feature dataset needs `keys` and gets every spec's label as a forbidden column.
    """
    from airflow_mlops.core.offline import read_raw_batch
    from airflow_mlops.core.spec import load_specs

    specs = load_specs()
    users = [s for s in specs if s.features.entity_df.dataset == dataset]
    if users:
        keys = keys or list(users[0].features.entity_keys)
        label = label or users[0].features.label
        timestamp_column = timestamp_column or users[0].features.entity_df.timestamp_column
    if not keys:
        raise MLOpsError(f"dataset '{dataset}' is not the label table of any spec, so its entity keys are unknown; "
                         f"pass --keys (e.g. --keys driver_id)")
    target = Path(out) if out else suite_path(dataset)
    if target.exists() and not force:
        raise MLOpsError(f"{target} exists (and may be hand-edited); pass --force to overwrite or --out elsewhere")
    forbidden = [] if label else sorted({s.features.label for s in specs})
    suite = suite_from_reference(read_raw_batch(Path(source)), dataset, keys, timestamp_column or "event_timestamp",
                                 label, unique_columns=unique, forbidden_columns=forbidden)
    return save_suite(suite.to_json_dict(), target)
