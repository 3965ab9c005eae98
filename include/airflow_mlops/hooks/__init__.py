"""Hooks: the only place that turns an Airflow connection into a tool client."""
