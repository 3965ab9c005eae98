"""Hooks: the only place that reads an Airflow connection; the store clients themselves are built in core
(`core.store_settings`, `core.mlflow_store`, `core.feast_store`), which the serving app uses without Airflow."""
