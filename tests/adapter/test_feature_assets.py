"""Feature asset names: the alias each view's materialize outlet uses, and reading the view back from an outlet."""

from __future__ import annotations

import pytest
from airflow.sdk import Asset, AssetAlias

from airflow_mlops.dags.assets import champion_asset, feature_view_of, features_alias, features_asset

pytestmark = pytest.mark.adapter


def test_alias_and_asset_names_are_stable() -> None:
    assert features_asset("driver_hourly_stats") == Asset(
        name="mlops.features.driver_hourly_stats", uri="mlops://features/driver_hourly_stats", group="mlops"
    )
    assert features_alias("driver_hourly_stats") == AssetAlias("mlops.features.driver_hourly_stats.updates",
                                                               group="mlops")


@pytest.mark.parametrize(
    ("outlet", "view"),
    [
        (features_alias("driver_hourly_stats"), "driver_hourly_stats"),
        (features_asset("driver_hourly_stats"), "driver_hourly_stats"),
        (Asset("mlops.features.ride_stats"), "ride_stats"),  # a hand-written static outlet
        (AssetAlias("mlops.features.ride_stats"), None),  # an alias without the suffix is not ours
        (AssetAlias("mlops.features..updates"), None),
        (champion_asset("ride_completion"), None),
        ("mlops.features.ride_stats", None),
    ],
)
def test_feature_view_of(outlet: object, view: str | None) -> None:
    assert feature_view_of(outlet) == view
