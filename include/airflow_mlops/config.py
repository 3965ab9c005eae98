"""Where things live. One state directory, MLOPS_HOME, holds all embedded state.

Resolution order for every setting: explicit argument > environment variable > default.
The defaults form the *embedded profile* (SQLite + duckdb + files, no server). The production
profile is selected only by configuration (README "Production profile").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_dir() -> Path:
    """The Astro project that ships specs, feature repo and suites.

    An editable install lives at <project>/include/airflow_mlops; a wheel install has no project,
    so the working directory is used (that is where `astro dev` and `airflow-mlops` run).
    """
    if "MLOPS_PROJECT_DIR" in os.environ:
        return Path(os.environ["MLOPS_PROJECT_DIR"]).resolve()
    candidate = PACKAGE_DIR.parents[1]
    if (candidate / "include" / "models").is_dir():
        return candidate
    return Path.cwd()


@dataclass(frozen=True)
class Paths:
    """Every embedded path, derived from MLOPS_HOME so tests can point one variable elsewhere."""

    home: Path

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_db(self) -> Path:
        return self.mlflow_dir / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow_dir / "artifacts"

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    @property
    def offline_dir(self) -> Path:
        return self.home / "offline"

    @property
    def landing_dir(self) -> Path:
        return self.home / "landing"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def training_sets_dir(self) -> Path:
        return self.home / "training_sets"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def predictions_dir(self) -> Path:
        """The serving app's prediction log (parquet, embedded profile)."""
        return self.home / "predictions"

    @property
    def labels_dir(self) -> Path:
        """Delayed labels arrive here, one folder per model: labels/<model>/*.parquet|*.csv."""
        return self.home / "labels"

    @property
    def monitoring_dir(self) -> Path:
        """Monitoring history (monitoring.db) and drift/performance reports."""
        return self.home / "monitoring"

    def dataset_dir(self, dataset: str) -> Path:
        """Offline-store directory of one dataset (partitioned parquet)."""
        return self.offline_dir / dataset


def mlops_home() -> Path:
    return Path(os.environ.get("MLOPS_HOME") or project_dir() / ".local").resolve()


def paths() -> Paths:
    return Paths(mlops_home())


def models_dir() -> Path:
    return Path(os.environ.get("MLOPS_MODELS_DIR") or project_dir() / "include" / "models")


def feature_repo_dir() -> Path:
    return Path(os.environ.get("MLOPS_FEATURE_REPO") or project_dir() / "include" / "feature_repo")


def expectations_dir() -> Path:
    return Path(os.environ.get("MLOPS_EXPECTATIONS_DIR") or project_dir() / "include" / "expectations")


def default_tracking_uri() -> str:
    """MLflow tracking store: MLFLOW_TRACKING_URI, else a SQLite file in the state dir."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths().mlflow_db}"


def default_online_store() -> str | None:
    """Online-store override, e.g. redis://127.0.0.1:6379/0; None = SQLite in the state dir."""
    return os.environ.get("MLOPS_FEAST_ONLINE_STORE") or None
