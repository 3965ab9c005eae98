"""Read a time window of the serving prediction log back as one flat DataFrame.

The serving app writes the log (serving/prediction_log.py) as partitioned parquet under
<MLOPS_HOME>/predictions/<model>/date=YYYY-MM-DD/ or into PostgreSQL (MLOPS_PREDICTION_LOG_URL).
Monitoring (drift, delayed-label performance, skew) reads it through `read_prediction_window`:

- rows with `start <= time < end` (UTC), only the model's own partitions (pruned by date);
- the JSON columns flattened: every `entity_key` field and every `features` field becomes a column
  (a feature the model did not use in a row is NaN); a multiclass model's `predicted_class` and
  `probabilities` (in `extra`, `core.predictions`) become `predicted_class` and `proba_<class>` columns;
- bounded memory: with `sample_rows`, at most about that many rows are kept, each file (or the SQL
  query) sampled uniformly before JSON parsing; `WindowFrame.sampled_from` says how many rows the
  window had, so reports can state the sampling.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops import config

if TYPE_CHECKING:
    import pandas as pd

PREDICTION_LOG_URL_ENV = "MLOPS_PREDICTION_LOG_URL"
BASE_COLUMNS = ("request_id", "time", "model_version", "route", "prediction", "shadow_version",
                "shadow_prediction", "protocol")
_TABLE = "mlops_prediction_log"


@dataclass(frozen=True)
class WindowFrame:
    """The rows read (`frame`), how many the window held (`sampled_from`), and which columns are features."""

    frame: pd.DataFrame
    sampled_from: int
    entity_columns: tuple[str, ...]
    feature_columns: tuple[str, ...]
    output_columns: tuple[str, ...] = ()  # multiclass: predicted_class, proba_<class>...

    @property
    def sampled(self) -> bool:
        return len(self.frame) < self.sampled_from


def read_prediction_window(model: str, start: datetime, end: datetime, *, sample_rows: int | None = None,
                           seed: int = 0, directory: Path | None = None, db_url: str | None = None) -> WindowFrame:
    """Predictions of `model` logged in [start, end); see the module docstring.

    :param directory: parquet root (default <MLOPS_HOME>/predictions).
    :param db_url: PostgreSQL URL (default MLOPS_PREDICTION_LOG_URL; when set, parquet is not read).
    """
    start, end = _utc(start), _utc(end)
    url = db_url if db_url is not None else os.environ.get(PREDICTION_LOG_URL_ENV) or None
    if url:
        raw, total = _read_postgres(url, model, start, end, sample_rows, seed)
    else:
        raw, total = _read_parquet(directory or config.paths().predictions_dir, model, start, end, sample_rows, seed)
    return _flatten(raw, total)


def window_bounds(window: str, *ends: Any) -> tuple[datetime, datetime]:
    """[end - window, end) in UTC: `end` = the first of `ends` that is set (ISO text or datetime), else now.

    Monitoring checks pass (their templated window_end, the run's data_interval_end). Airflow hands
    the latter as a pendulum DateTime, which pandas refuses to compare with datetime64 columns, so it
    is turned into a plain datetime here.
    """
    from airflow_mlops.core.spec import duration_seconds

    end = datetime.now(UTC)
    for value in ends:
        if value is None or value == "":
            continue
        end = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        end = end if type(end) is datetime else datetime.fromtimestamp(end.timestamp(), end.tzinfo or UTC)
        break
    end = _utc(end)
    return end - timedelta(seconds=duration_seconds(window)), end


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _partitions(root: Path, model: str, start: datetime, end: datetime) -> list[Path]:
    folder = root / model
    if not folder.is_dir():
        return []
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    keep = []
    for part in sorted(folder.glob("date=*")):
        try:
            day = date.fromisoformat(part.name.removeprefix("date="))
        except ValueError:
            continue
        if first <= day <= last:
            keep.extend(sorted(p for p in part.glob("*.parquet") if not p.name.startswith(".")))
    return keep


def _read_parquet(root: Path, model: str, start: datetime, end: datetime, sample_rows: int | None,
                  seed: int) -> tuple[pd.DataFrame, int]:
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = _partitions(root, model, start, end)
    # Count the window's rows first (the `time` column only) so the fraction is relative to the window,
    # not to whole day files that also hold rows outside it.
    in_window = [_window_mask(pq.read_table(path, columns=["time"]).column("time"), start, end) for path in files]
    total = sum(int(pc.sum(mask).as_py() or 0) for mask in in_window)
    fraction = 1.0 if not sample_rows or total <= sample_rows else sample_rows / total
    rng = np.random.default_rng(seed)
    parts = []
    for path, mask in zip(files, in_window, strict=True):
        if not pc.any(mask).as_py():
            continue
        table = pq.read_table(path).filter(mask)
        if fraction < 1.0:
            table = table.take(np.flatnonzero(rng.random(table.num_rows) < fraction))
        if table.num_rows:
            parts.append(table.to_pandas())
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*BASE_COLUMNS, "entity_key",
                                                                                       "features", "extra"])
    return frame, total


def _window_mask(stamps: Any, start: datetime, end: datetime) -> Any:
    import pyarrow.compute as pc

    return pc.and_(pc.greater_equal(stamps, start), pc.less(stamps, end))


def _read_postgres(url: str, model: str, start: datetime, end: datetime, sample_rows: int | None,
                   seed: int) -> tuple[pd.DataFrame, int]:
    import pandas as pd
    import psycopg2

    scheme, _, rest = url.partition("://")
    where = f'FROM {_TABLE} WHERE model = %s AND "time" >= %s AND "time" < %s'
    args: list[Any] = [model, start, end]
    with psycopg2.connect(f"{scheme.split('+', 1)[0]}://{rest}", connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) {where}", args)
        total = int(cur.fetchone()[0])
        sample = ""
        if sample_rows and total > sample_rows:
            cur.execute("SELECT setseed(%s)", [((seed % 1000) / 1000.0)])
            sample, args = " AND random() < %s", [*args, sample_rows / total]
        cols = ", ".join(f'"{c}"' for c in (*BASE_COLUMNS, "entity_key", "features", "extra"))
        cur.execute(f"SELECT {cols} {where}{sample}", args)
        rows = cur.fetchall()
    frame = pd.DataFrame(rows, columns=[*BASE_COLUMNS, "entity_key", "features", "extra"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    return frame, total


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None or (isinstance(value, float) and value != value):
        return {}
    if isinstance(value, dict):  # psycopg2 decodes JSONB already
        return value
    parsed = json.loads(value)
    return parsed if isinstance(parsed, dict) else {}


def _flatten(raw: pd.DataFrame, total: int) -> WindowFrame:
    import pandas as pd

    entities = pd.DataFrame([_as_dict(v) for v in raw["entity_key"]], index=raw.index)
    features = pd.DataFrame([_as_dict(v) for v in raw["features"]], index=raw.index)
    features = features.drop(columns=[c for c in features.columns if c in entities.columns], errors="ignore")
    base = raw[[c for c in BASE_COLUMNS if c in raw.columns]]
    base = base.drop(columns=[c for c in base.columns if c in entities.columns or c in features.columns])
    outputs = _outputs(raw, raw.index)
    frame = pd.concat([base, entities, features.apply(pd.to_numeric, errors="coerce"), outputs], axis=1)
    frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
    return WindowFrame(frame=frame, sampled_from=total, entity_columns=tuple(entities.columns),
                       feature_columns=tuple(features.columns), output_columns=tuple(outputs.columns))


def _outputs(raw: pd.DataFrame, index: Any) -> pd.DataFrame:
    """`predicted_class` and `proba_<class>` columns from the multiclass fields in `extra` (none for other tasks)."""
    import pandas as pd

    from airflow_mlops.core.predictions import PREDICTED_CLASS, PROBABILITIES, proba_column

    extras = [_as_dict(v) for v in raw["extra"]] if "extra" in raw.columns else []
    if not any(PREDICTED_CLASS in e for e in extras):
        return pd.DataFrame(index=index)
    rows = [{PREDICTED_CLASS: e.get(PREDICTED_CLASS),
             **{proba_column(c): p for c, p in (e.get(PROBABILITIES) or {}).items()}} for e in extras]
    return pd.DataFrame(rows, index=index)
