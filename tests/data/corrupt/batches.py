"""The bad-input corpus: corrupt raw batches of the demo datasets, generated at test time (no binary files in git).

Each `Corruption` turns a good frame of its dataset into a bad file and names what the gate must report:
the column (None for file-level rules) and the rule. `write_corpus` writes every case to
`<root>/<case>/<dataset>/<file>` so a test (or a subprocess runner) can drop them into the landing dir.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from airflow_mlops.core.demo_data import DemoConfig, generate
from airflow_mlops.core.validation import FILE_RULES

STATS, RIDES = "driver_hourly_stats", "rides"


@dataclass(frozen=True)
class Corruption:
    case: str
    dataset: str
    column: str | None  # None: a file-level rule (the message names the file)
    rule: str
    write: Callable[[pd.DataFrame, Path], None]
    suffix: str = ".parquet"

    @property
    def file_name(self) -> str:
        return f"{self.case}{self.suffix}"

    @property
    def expected(self) -> str:
        """What the gate's message must say: `column 'x': rule r`, `file: rule r` or `table: rule r`."""
        where = f"column '{self.column}'" if self.column else "file" if self.rule in FILE_RULES else "table"
        return f"{where}: rule {self.rule}"


def _parquet(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[pd.DataFrame, Path], None]:
    def write(frame: pd.DataFrame, path: Path) -> None:
        change(frame.copy()).to_parquet(path, index=False)

    return write


def _set(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The first three rows of `column` set to `value` (None: missing, as pandas writes a nullable int: float NaN)."""

    def change(frame: pd.DataFrame) -> pd.DataFrame:
        if value is None:
            frame[column] = frame[column].astype("float64")
        frame.loc[frame.index[:3], column] = float("nan") if value is None else value
        return frame

    return change


def _duplicate_entity_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.head(4)], ignore_index=True)


def _naive_timestamps(frame: pd.DataFrame) -> pd.DataFrame:
    frame["event_timestamp"] = frame["event_timestamp"].dt.tz_localize(None)
    return frame


def _in_the_future(frame: pd.DataFrame) -> pd.DataFrame:
    later = datetime.now(UTC) + timedelta(days=30)
    shift = pd.Timestamp(later) - frame["event_timestamp"].min()
    for column in ("event_timestamp", "created"):
        frame[column] = frame[column] + shift
    return frame


def _in_the_far_past(frame: pd.DataFrame) -> pd.DataFrame:
    """A unit or epoch mix-up: the batch dated 1970 (before the shipped suites' valid_from)."""
    shift = pd.Timestamp("1970-01-01", tz="UTC") - frame["event_timestamp"].min()
    for column in ("event_timestamp", "created"):
        if column in frame.columns:
            frame[column] = frame[column] + shift
    return frame


def _constant(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """A broken export: one value filled into every row of a column that varies."""
    return lambda frame: frame.assign(**{column: frame[column].iloc[0]})


def _wrong_dataset(dataset: str) -> Callable[[pd.DataFrame, Path], None]:
    """A good batch of `dataset` dropped into another dataset's landing dir."""

    def write(frame: pd.DataFrame, path: Path) -> None:
        base_frames(frame["event_timestamp"].min().to_pydatetime())[dataset].to_parquet(path, index=False)

    return write


def _empty_file(frame: pd.DataFrame, path: Path) -> None:
    path.write_bytes(b"")


def _truncated(frame: pd.DataFrame, path: Path) -> None:
    frame.to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _latin1_csv(frame: pd.DataFrame, path: Path) -> None:
    text = frame.head(20).to_csv(index=False)
    path.write_bytes(text.replace("conv_rate", "conv_rate_é", 1).encode("latin-1"))


CORRUPTIONS: tuple[Corruption, ...] = (
    Corruption("missing_column", STATS, "rating", "expect_table_columns_to_match_set",
               _parquet(lambda f: f.drop(columns=["rating"]))),
    Corruption("extra_column", STATS, "surge_bonus", "expect_table_columns_to_match_set",
               _parquet(lambda f: f.assign(surge_bonus=1.0))),
    Corruption("wrong_dtype", STATS, "avg_daily_trips", "expect_column_type_to_be",
               _parquet(lambda f: f.assign(avg_daily_trips=f["avg_daily_trips"].astype(str)))),
    Corruption("null_key", STATS, "driver_id", "expect_column_values_to_not_be_null",
               _parquet(_set("driver_id", None))),
    Corruption("duplicate_entity_timestamp", STATS, "driver_id+event_timestamp", "expect_compound_columns_to_be_unique",
               _parquet(_duplicate_entity_rows)),
    Corruption("rate_out_of_range", STATS, "conv_rate", "expect_column_values_to_be_between",
               _parquet(_set("conv_rate", 1.7))),
    Corruption("zero_distance", RIDES, "trip_distance_km", "expect_column_values_to_be_between",
               _parquet(_set("trip_distance_km", 0.0))),
    Corruption("label_not_binary", RIDES, "completed", "expect_column_values_to_be_in_set",
               _parquet(_set("completed", 2))),
    Corruption("empty_file", STATS, None, "file_not_empty", _empty_file),
    Corruption("no_rows", RIDES, None, "expect_table_row_count_to_be_between", _parquet(lambda f: f.head(0))),
    Corruption("truncated_parquet", STATS, None, "file_readable", _truncated),
    Corruption("naive_timestamps", RIDES, "event_timestamp", "timestamps_tz_utc", _parquet(_naive_timestamps)),
    Corruption("future_timestamps", STATS, "event_timestamp", "timestamps_not_in_future", _parquet(_in_the_future)),
    Corruption("label_in_feature_table", STATS, "completed", "no_label_leakage",
               _parquet(lambda f: f.assign(completed=1))),
    Corruption("label_restated", RIDES, "completed_at_dropoff", "no_label_leakage",
               _parquet(lambda f: f.assign(completed_at_dropoff=f["completed"] * 1.0))),
    Corruption("non_utf8_csv", STATS, None, "csv_utf8", _latin1_csv, suffix=".csv"),
    Corruption("far_past_timestamps", STATS, "event_timestamp", "timestamps_not_before_valid_from",
               _parquet(_in_the_far_past)),
    Corruption("constant_feature", STATS, "conv_rate", "no_degenerate_columns", _parquet(_constant("conv_rate"))),
    Corruption("infinite_values", STATS, "acc_rate", "expect_column_values_to_be_between",
               _parquet(_set("acc_rate", float("inf")))),
    Corruption("negative_infinity", RIDES, "trip_distance_km", "expect_column_values_to_be_between",
               _parquet(_set("trip_distance_km", float("-inf")))),
    Corruption("wrong_dataset_dir", STATS, None, "schema_matches_dataset", _wrong_dataset(RIDES)),
)


def base_frames(start: datetime, days: int = 1, seed: int = 5) -> dict[str, pd.DataFrame]:
    """Small good batches of both datasets (10 drivers, 60 rides a day) to corrupt."""
    return generate(DemoConfig(start=start, days=days, drivers=10, rides_per_day=60, seed=seed))


def write_corpus(root: Path, start: datetime) -> dict[str, Path]:
    """Every corruption written under `root/<case>/<dataset>/<file>`; returns case -> file."""
    frames = base_frames(start)
    written = {}
    for corruption in CORRUPTIONS:
        target = root / corruption.case / corruption.dataset / corruption.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        corruption.write(frames[corruption.dataset], target)
        written[corruption.case] = target
    return written
