"""`/predict?explain=true` on the real demo state (Feast SQLite online store, SQLite MLflow registry).

ride_completion v1 is the session's demo champion, trained by the real training DAG: its run carries the feature
profile with medians. Each explained row's attributions are checked against the downloaded model scored
independently (prediction with one feature set to its median). ride_duration gets a linear regression (Ridge)
as champion, with the profile the training job logs: there the attributions add up to the prediction minus the
baseline's prediction exactly (no interaction, core/explanations.py). A second Ridge version logged without a
profile, served pinned, answers 409 naming the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from support.demo_state import checkout_trained_demo

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REQUEST = {"trip_distance_km": 3.2, "surge_multiplier": 1.25, "pickup_hour": 8}


@pytest.fixture(scope="module")
def demo() -> Iterator[Any]:
    state = checkout_trained_demo()
    assert state.built["train"]["state"] == "success", state.built
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLOPS_FEAST_ONLINE_STORE",
                     "AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_FEAST_DEFAULT"):
            mp.delenv(name, raising=False)
        mp.setenv("MLOPS_HOME", str(state.home))
        yield state


def client_of(name: str, version: str | None = None) -> Any:
    from fastapi.testclient import TestClient

    from airflow_mlops.serving.app import create_app, load_spec

    return TestClient(create_app(load_spec(name), version=version))  # its prediction log: under the demo state


def profile_and_model(name: str, version: str) -> tuple[dict[str, Any], Any]:
    import mlflow

    from airflow_mlops.core.training import FEATURE_PROFILE_ARTIFACT
    from airflow_mlops.hooks.mlflow import MLflowHook

    hook = MLflowHook()
    client = hook.get_conn()
    run_id = client.get_model_version(name, version).run_id
    profile = json.loads(Path(client.download_artifacts(run_id, FEATURE_PROFILE_ARTIFACT)).read_text())
    with hook.activated():
        model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    return profile, model


def online_row(driver_id: int, columns: list[str]) -> dict[str, float]:
    from airflow_mlops.hooks.feast import FeastHook
    from airflow_mlops.serving.app import close_online_connection

    store = FeastHook().get_store()
    try:
        online = store.get_online_features(features=store.get_feature_service("ride_completion_v1"),
                                           entity_rows=[{"driver_id": driver_id}], full_feature_names=False).to_dict()
    finally:
        close_online_connection(store)
    values = {**REQUEST, **{k: v[0] for k, v in online.items()}}
    return {c: float(values[c]) for c in columns}


@pytest.fixture(scope="module")
def completion(demo: Any) -> Iterator[Any]:
    with client_of("ride_completion") as client:
        yield client


def test_plain_predict_keeps_its_shape_and_explain_adds_one_field(completion: Any) -> None:
    plain = completion.post("/predict", json={"driver_id": 1001, **REQUEST}, headers={"X-Request-ID": "a"})
    explained = completion.post("/predict?explain=true", json={"driver_id": 1001, **REQUEST},
                                headers={"X-Request-ID": "a"})
    assert plain.status_code == explained.status_code == 200, explained.text
    [row] = plain.json()["predictions"]
    [with_why] = explained.json()["predictions"]
    assert set(row) == {"prediction", "model_version", "route", "request_id", "entity"}
    assert {k: v for k, v in with_why.items() if k != "explanation"} == row
    off = completion.post("/predict?explain=false", json={"driver_id": 1001, **REQUEST}).json()["predictions"][0]
    assert "explanation" not in off


def test_each_attribution_is_the_prediction_minus_the_prediction_at_that_features_median(completion: Any) -> None:
    profile, model = profile_and_model("ride_completion", "1")
    columns = [str(c) for c in model.feature_names_in_]
    body = {"entities": [{"driver_id": d, **REQUEST} for d in (1001, 1002, 1003)]}
    response = completion.post("/predict?explain=true", json=body)
    assert response.status_code == 200, response.text
    for driver, answer in zip((1001, 1002, 1003), response.json()["predictions"], strict=True):
        why = answer["explanation"]
        x = online_row(driver, columns)
        medians = {c: profile["columns"][c]["median"] for c in columns}

        def score(values: dict[str, float]) -> float:
            return float(model.predict_proba(pd.DataFrame([values], columns=columns))[0, 1])

        assert why["method"] == "baseline_substitution" and why["model_version"] == "1"
        assert why["explained"] == "probability of the positive class"
        assert why["output"] == pytest.approx(answer["prediction"], abs=1e-12) == pytest.approx(score(x), abs=1e-12)
        assert why["baseline_output"] == pytest.approx(score(medians), abs=1e-12)
        assert sorted(a["feature"] for a in why["attributions"]) == sorted(columns)
        for item in why["attributions"]:
            assert item["baseline"] == medians[item["feature"]] and item["value"] == x[item["feature"]]
            expected = score(x) - score({**x, item["feature"]: medians[item["feature"]]})
            assert item["contribution"] == pytest.approx(expected, abs=1e-12)
        sizes = [abs(a["contribution"]) for a in why["attributions"]]
        assert sizes == sorted(sizes, reverse=True)


def test_an_unknown_explain_value_is_refused_naming_the_parameter(completion: Any) -> None:
    response = completion.post("/predict?explain=please", json={"driver_id": 1001, **REQUEST})
    assert response.status_code == 400 and "explain" in response.text and "?explain=true" in response.text


@pytest.fixture(scope="module")
def linear_versions(demo: Any) -> tuple[str, str, list[str]]:
    """ride_duration v(champion): a Ridge with the training job's profile; another Ridge without one."""
    from airflow_mlops.core.training import FEATURE_PROFILE_ARTIFACT, TAG_FEATURE_PROFILE, feature_profile
    from airflow_mlops.hooks.mlflow import MLflowHook
    from support.task_models import DEMO_COLUMNS, features, fit, register

    columns = list(DEMO_COLUMNS)
    model = fit("regression", columns=DEMO_COLUMNS)
    profiled = register(model, "ride_duration", "regression", alias="champion")
    bare = register(model, "ride_duration", "regression", alias=None)
    client = MLflowHook().get_conn()
    run_id = client.get_model_version("ride_duration", profiled).run_id
    client.log_dict(run_id, feature_profile(features(400, 5, DEMO_COLUMNS), columns), FEATURE_PROFILE_ARTIFACT)
    client.set_tag(run_id, TAG_FEATURE_PROFILE, FEATURE_PROFILE_ARTIFACT)
    return profiled, bare, columns


def test_linear_attributions_add_up_to_prediction_minus_baseline_prediction(
        linear_versions: tuple[str, str, list[str]]) -> None:
    profiled, _, columns = linear_versions
    with client_of("ride_duration") as client:
        response = client.post("/predict?explain=true", json={"entities": [{"driver_id": d, **REQUEST}
                                                                          for d in (1001, 1004)]})
    assert response.status_code == 200, response.text
    for answer in response.json()["predictions"]:
        why = answer["explanation"]
        assert answer["model_version"] == why["model_version"] == profiled and why["explained"] == "predicted value"
        assert why["output"] == pytest.approx(answer["prediction"], abs=1e-9)
        total = sum(a["contribution"] for a in why["attributions"])
        assert total == pytest.approx(why["output"] - why["baseline_output"], abs=1e-9)
        assert len(why["attributions"]) == len(columns)


def test_explaining_a_version_without_a_profile_is_a_409_naming_the_fix(
        linear_versions: tuple[str, str, list[str]]) -> None:
    _, bare, _ = linear_versions
    with client_of("ride_duration", version=bare) as client:
        body = {"driver_id": 1001, **REQUEST}
        response = client.post("/predict?explain=true", json=body)
        assert client.post("/predict", json=body).status_code == 200  # unexplained, it serves as ever
    assert response.status_code == 409, response.text
    text = response.text
    assert f"v{bare}" in text and "feature profile" in text and "Retrain" in text and "without ?explain=true" in text
