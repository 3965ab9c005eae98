"""Feast definitions for the demo domain (ride completion by driver).

Sources point into the offline store of the state directory (MLOPS_HOME/offline/<dataset>),
written by the feature pipeline as partitioned parquet.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Float64, Int64
from feast.value_type import ValueType

from airflow_mlops.config import paths

driver = Entity(
    name="driver", join_keys=["driver_id"], value_type=ValueType.INT64, description="A driver on the platform"
)

driver_hourly_stats_source = FileSource(
    name="driver_hourly_stats_source",
    path=str(paths().dataset_dir("driver_hourly_stats") / "**" / "*.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=2),
    schema=[
        Field(name="conv_rate", dtype=Float64, description="share of offers converted in the last hour"),
        Field(name="acc_rate", dtype=Float64, description="share of offers accepted in the last hour"),
        Field(name="avg_daily_trips", dtype=Int64, description="trips per day, 7-day average"),
        Field(name="rating", dtype=Float64, description="rolling passenger rating"),
    ],
    online=True,
    source=driver_hourly_stats_source,
    tags={"owner": "mlops", "freshness": "2h"},
)

ride_completion_v1 = FeatureService(
    name="ride_completion_v1",
    features=[driver_hourly_stats],
    description="Driver features used by the ride_completion model",
)

ride_duration_v1 = FeatureService(
    name="ride_duration_v1",
    features=[driver_hourly_stats],
    description="Driver features used by the ride_duration model",
)
