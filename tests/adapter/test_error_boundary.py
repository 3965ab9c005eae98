"""Domain errors at our operators' boundary: a no-retry error becomes Airflow's fail-without-retry exception."""

from __future__ import annotations

import pytest

from airflow_mlops.exceptions import TrainingFailed

pytestmark = pytest.mark.adapter


def test_store_errors_mask_the_url_and_say_whether_they_retry() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_mlops.boundary import airflow_error
    from airflow_mlops.exceptions import StoreConfigError, StoreUnavailable

    url = "postgresql://mlflow:hunter2@db:5432/mlflow"
    config = StoreUnavailable.of("MLflow backend store", url, "connection refused", "Start it", config_error=True)
    passing = StoreUnavailable.of("MLflow backend store", url, "no answer within 3 s", "Start it.", config_error=False)
    assert isinstance(config, StoreConfigError) and config.retry is False
    assert not isinstance(passing, StoreConfigError) and passing.retry is True
    # at an operator's boundary: the config error fails the task at once, the other one is retried
    assert isinstance(airflow_error(config), AirflowFailException)
    assert not isinstance(airflow_error(passing), AirflowFailException)
    assert str(config) == ("MLflow backend store at postgresql://mlflow:***@db:5432/mlflow is unreachable (connection "
                           "refused). Start it. Not retried: this is a configuration error; fix it, then clear the "
                           "task.")
    assert str(passing) == ("MLflow backend store at postgresql://mlflow:***@db:5432/mlflow is unreachable (no answer "
                            "within 3 s). Start it.")
    assert "hunter2" not in str(config) + str(passing) + config.url + passing.url


def test_training_errors_do_not_retry() -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from airflow_mlops.boundary import airflow_error

    # the domain error is plain Python (core imports no Airflow); the operator boundary makes it Airflow's no-retry type
    assert TrainingFailed.retry is False and not issubclass(TrainingFailed, AirflowFailException)
    assert isinstance(airflow_error(TrainingFailed("bad estimator")), AirflowFailException)
