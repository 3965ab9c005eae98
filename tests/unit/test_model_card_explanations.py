"""The model card's Explanations section: top features of the version and the attribution drift against the
version it is compared with, in the card's JSON, Markdown and HTML; a version without importance says so."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.core.model_card import build_model_card, render_html, render_markdown
from airflow_mlops.core.model_card_explanations import NOT_EXPLAINED, explanation_summary

pytestmark = pytest.mark.unit


def importance(order: list[str]) -> dict:
    features = [{"feature": f, "importance": 0.5 / rank, "std": 0.01, "rank": rank}
                for rank, f in enumerate(order, start=1)]
    return {"method": "permutation", "scoring": "roc_auc", "metric": "roc_auc", "rows": 2000,
            "held_out_rows": 4800, "seed": 7, "repeats": 3, "features": features}


def card(explanations: dict | None) -> dict:
    return build_model_card(model={"name": "rides"}, version="4", run_id="r", lineage=None, evaluation=None,
                            explanations=explanations)


def test_top_features_and_drift_against_the_champion_are_on_the_card() -> None:
    before = importance(["conv_rate", "trip_distance_km", "rating", "acc_rate", "pickup_hour", "surge"])
    after = importance(["trip_distance_km", "conv_rate", "surge", "rating", "acc_rate", "pickup_hour"])
    summary = explanation_summary(after, before, "champion v3")
    assert [f["feature"] for f in summary["top"]] == ["trip_distance_km", "conv_rate", "surge", "rating", "acc_rate"]
    drift = summary["drift"]
    assert drift["against"] == "champion v3" and drift["entered_top"] == ["surge"] and drift["left_top"] == [
        "pickup_hour"]
    assert 0 < drift["kendall_tau"] < 1
    built = card(summary)
    assert json.loads(json.dumps(built, allow_nan=False))["explanations"]["drift"]["against"] == "champion v3"
    markdown = render_markdown(built)
    section = markdown.split("## Explanations", 1)[1]
    assert "| 1 | trip_distance_km | 0.5000 | 0.0100 |" in section and "champion v3" in section
    assert "entered the top 5**: surge" in section and "left the top 5**: pickup_hour" in section
    assert "Explanations" in render_html(built) and "trip_distance_km" in render_html(built)


def test_without_an_earlier_importance_there_is_no_drift_and_one_feature_gives_no_tau() -> None:
    alone = explanation_summary(importance(["a", "b"]))
    assert "drift" not in alone
    assert "no earlier version with explanations" in render_markdown(card(alone))
    one = explanation_summary(importance(["a"]), importance(["a", "b"]), "previous version v1")
    assert one["drift"]["kendall_tau"] is None and one["drift"]["only_previous"] == ["b"]  # NaN is not JSON


def test_a_version_without_importance_says_so() -> None:
    assert explanation_summary(None) is None and explanation_summary({"features": []}) is None
    built = card(None)
    assert built["explanations"] is None
    assert NOT_EXPLAINED in render_markdown(built).split("## Explanations", 1)[1]
