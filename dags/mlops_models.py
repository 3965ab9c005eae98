"""All airflow-mlops DAGs, generated from include/models/*.yaml. Add a model by adding a spec, not a DAG."""

from airflow_mlops.dags import build_dags

globals().update(build_dags())
