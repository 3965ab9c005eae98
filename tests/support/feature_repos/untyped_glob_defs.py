"""Feast definitions for tests/integration/test_checks.py (`UNTYPED_GLOB_REPO`) and test_feast_hook.py
(`UNTYPED_GLOB_DEFS`), written as `defs.py` into a repo of the test.

An entity whose join key has no declared type, over a file source with a glob path: `check` must report it,
and FeastHook.apply() must refuse it with the fix.
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64

rider = Entity(name="rider", join_keys=["rider_id"])
src = FileSource(path="/nowhere/**/*.parquet", timestamp_field="event_timestamp")
rider_stats = FeatureView(name="rider_stats", entities=[rider], ttl=timedelta(days=1),
                          schema=[Field(name="score", dtype=Float64)], source=src)
